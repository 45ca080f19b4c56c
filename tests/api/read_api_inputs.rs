//! The read API's inputs (issue 12, items 4 and 7): every query parameter, the cursor
//! after decoding and the path id are checked before the database is asked; what the
//! OpenAPI document allows is accepted, what it forbids answers 400 naming the input,
//! and a value Postgres cannot store is a 400, never a 503 "database down".

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::helpers::*;

const TOKEN: &str = "read-token-1-0123456789abcdef0123456789";

async fn api_app(pool: &PgPool, extra: &str) -> TestApp {
    let tokens = format!("[api]\ntokens = \"{TOKEN}\"");
    spawn_app_with(pool.clone(), settings_with("http://127.0.0.1:9", &[&tokens, extra])).await
}

async fn get_v1(app: &TestApp, path_and_query: &str) -> reqwest::Response {
    app.http.get(format!("{}{path_and_query}", app.address)).bearer_auth(TOKEN).send().await.unwrap()
}

/// Every byte percent-encoded, as a client would send any text.
fn encoded(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The cursor the API would give for `id` (unpadded base64url).
fn cursor_of(id: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// Three codes in the mirror.
async fn seed(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO access_codes (access_code_id, device_id, status, warnings, errors, fetched_at, updated_at)
         VALUES ('ac_a', 'dev_1', 'set', '[]', '[]', now(), '2026-11-20T00:00:00Z'),
                ('ac_b', 'dev_1', 'setting', '[]', '[]', now(), '2026-11-21T00:00:00Z'),
                ('ac_c', 'dev_2', 'unknown', '[]', '[]', now(), '2026-11-22T00:00:00Z')",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn assert_names(response: reqwest::Response, parameter: &str, case: &str) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_parameter", "{case}: {body}");
    assert_eq!(body["parameter"], parameter, "{case}: {body}");
    assert!(body["message"].is_string(), "{case}: {body}");
}

async fn ids(response: reqwest::Response, case: &str) -> Vec<String> {
    assert_eq!(response.status(), StatusCode::OK, "{case}");
    let body: Value = response.json().await.unwrap();
    body["access_codes"].as_array().unwrap().iter().map(|c| c["access_code_id"].as_str().unwrap().to_owned()).collect()
}

#[sqlx::test]
async fn a_nul_in_any_input_answers_400_naming_it_without_asking_the_database(pool: PgPool) {
    let proxy = DatabaseProxy::start(postgres_address(&pool)).await;
    let app = api_app(&proxy.pool(&pool), "").await;
    // The database is unreachable: only an answer given without it can be a 400.
    proxy.down();
    let cases = [
        ("/v1/access_codes?device_id=%00", "device_id"),
        ("/v1/access_codes?device_id=dev_1%00", "device_id"),
        ("/v1/access_codes?status=%00", "status"),
        ("/v1/access_codes?status=set%00", "status"),
        ("/v1/access_codes?has_errors=%00", "has_errors"),
        ("/v1/access_codes?has_warnings=true%00", "has_warnings"),
        ("/v1/access_codes?deleted=%00", "deleted"),
        ("/v1/access_codes?updated_since=%00", "updated_since"),
        ("/v1/access_codes?updated_since=2026-11-25T10:00:00Z%00", "updated_since"),
        ("/v1/access_codes?limit=%00", "limit"),
        ("/v1/access_codes?cursor=%00", "cursor"),
        // base64url of a NUL byte, and of "ac_\0b": NUL only after decoding.
        ("/v1/access_codes?cursor=AA", "cursor"),
        (&format!("/v1/access_codes?cursor={}", cursor_of(b"ac_\0b")), "cursor"),
        ("/v1/access_codes/%00", "access_code_id"),
        ("/v1/access_codes/ac_a%00", "access_code_id"),
    ];
    for (path, parameter) in cases {
        assert_names(get_v1(&app, path).await, parameter, path).await;
    }
    // The same with the database up.
    proxy.up();
    assert_names(get_v1(&app, "/v1/access_codes?device_id=%00").await, "device_id", "database up").await;
    assert_names(get_v1(&app, "/v1/access_codes/%00").await, "access_code_id", "database up").await;
    assert_eq!(get_v1(&app, "/v1/access_codes").await.status(), StatusCode::OK, "the proxy works");
}

/// The backstop: a value that passes the checks but that the database still refuses
/// (here a character a LATIN1 database has no room for) answers 400, not 503.
#[sqlx::test]
async fn a_value_the_database_refuses_answers_400_not_503(pool: PgPool) {
    let name = format!("sas_latin1_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let _dropped_at_the_end = DropDatabase { name: name.clone(), server: (*pool.connect_options()).clone() };
    let latin1 = PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*pool.connect_options()).clone().database(&name))
        .await
        .unwrap();
    // The schema, from the migrations, less their comments' non-ASCII characters
    // (`→`), which a LATIN1 database refuses as well.
    for migration in seam_access_sync::store::MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()) {
        let sql: String = migration.sql.as_str().chars().filter(char::is_ascii).collect();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&latin1).await.unwrap();
    }
    seed(&latin1).await;
    let app = api_app(&latin1, "").await;

    let refused = get_v1(&app, &format!("/v1/access_codes?device_id={}", encoded("€"))).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_parameter", "{body}");
    assert_names(get_v1(&app, &format!("/v1/access_codes/{}", encoded("ac_€"))).await, "access_code_id", "path").await;
    // What LATIN1 holds is served as usual.
    let latin1_text = get_v1(&app, &format!("/v1/access_codes?device_id={}", encoded("dév"))).await;
    assert_eq!(ids(latin1_text, "dév").await, Vec::<String>::new());
    assert_eq!(ids(get_v1(&app, "/v1/access_codes?device_id=dev_1").await, "dev_1").await, ["ac_a", "ac_b"]);

    app.stop().await;
    latin1.close().await;
}

/// Drops a database the test made when the test ends, passed or failed.
struct DropDatabase {
    name: String,
    server: PgConnectOptions,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        // Drop cannot wait for the test's runtime: a runtime of its own, on a thread of its own.
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut connection = PgConnection::connect_with(&server).await.expect("connect to drop the database");
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut connection).await.expect("drop the database");
            })
        });
        if dropping.join().is_err() && !std::thread::panicking() {
            panic!("could not drop database {}", self.name);
        }
    }
}

#[sqlx::test]
async fn every_value_the_document_allows_is_accepted(pool: PgPool) {
    seed(&pool).await;
    let app = api_app(&pool, "").await;
    let longest_id = "é".repeat(255);
    let longest_cursor = cursor_of("😀".repeat(255).as_bytes());
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("?".into(), vec!["ac_a", "ac_b", "ac_c"]),
        ("?limit=1".into(), vec!["ac_a"]),
        // The default api.max_page_size.
        ("?limit=1000".into(), vec!["ac_a", "ac_b", "ac_c"]),
        ("?status=unknown".into(), vec!["ac_c"]),
        ("?has_errors=false&has_warnings=false&deleted=false".into(), vec!["ac_a", "ac_b", "ac_c"]),
        // Any text Postgres can store, up to 255 characters (not bytes).
        ("?device_id=%20".into(), vec![]),
        ("?device_id=%01".into(), vec![]),
        (format!("?device_id={}", encoded(&longest_id)), vec![]),
        // RFC 3339 as JSON Schema's date-time has it: lower-case t and z, a leap second.
        ("?updated_since=2026-11-21t00:00:00z".into(), vec!["ac_b", "ac_c"]),
        ("?updated_since=2026-11-20T23:59:60Z".into(), vec!["ac_b", "ac_c"]),
        ("?updated_since=2026-11-21T01:00:00.000000001%2B01:00".into(), vec!["ac_b", "ac_c"]),
        // Any canonical base64url without a NUL byte, even of bytes that are not UTF-8.
        (format!("?cursor={}", cursor_of(b"ac_a")), vec!["ac_b", "ac_c"]),
        ("?cursor=_w".into(), vec![]),
        (format!("?cursor={longest_cursor}"), vec![]),
    ];
    for (query, expected) in cases {
        let found = ids(get_v1(&app, &format!("/v1/access_codes{query}")).await, &query).await;
        assert_eq!(found, expected, "{query}");
    }
    for id in [encoded(&longest_id), "%20".into(), "%01".into(), encoded("😀")] {
        let response = get_v1(&app, &format!("/v1/access_codes/{id}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "not_found");
    }
}

#[sqlx::test]
async fn every_value_the_document_forbids_answers_400_naming_the_parameter(pool: PgPool) {
    seed(&pool).await;
    let app = api_app(&pool, "").await;
    let too_long = "x".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        // Issue 12, finding 8: what schemathesis sent, one parameter at a time.
        ("?status=".into(), "status"),
        ("?device_id=".into(), "device_id"),
        ("?has_errors=".into(), "has_errors"),
        ("?limit=".into(), "limit"),
        ("?status=bogus".into(), "status"),
        ("?status=SET".into(), "status"),
        (format!("?device_id={too_long}"), "device_id"),
        ("?has_warnings=True".into(), "has_warnings"),
        ("?deleted=0".into(), "deleted"),
        ("?limit=%2B5".into(), "limit"),
        ("?limit=05".into(), "limit"),
        ("?limit=1.0".into(), "limit"),
        ("?limit=1001".into(), "limit"),
        ("?limit=1&limit=2".into(), "limit"),
        ("?updated_since=2026-11-25%2010:00:00Z".into(), "updated_since"),
        ("?updated_since=2026-11-25T10:00:60Z".into(), "updated_since"),
        ("?updated_since=2026-02-29T00:00:00Z".into(), "updated_since"),
        ("?updated_since=2026-11-25T10:00:00%2B0100".into(), "updated_since"),
        ("?cursor=QR".into(), "cursor"),
        ("?cursor=QQ%3D%3D".into(), "cursor"),
        (format!("?cursor={}QQ", cursor_of("😀".repeat(255).as_bytes())), "cursor"),
    ];
    for (query, parameter) in cases {
        assert_names(get_v1(&app, &format!("/v1/access_codes{query}")).await, parameter, &query).await;
    }
    for id in [too_long, encoded(&"é".repeat(256)), "%FF".into()] {
        assert_names(get_v1(&app, &format!("/v1/access_codes/{id}")).await, "access_code_id", &id).await;
    }
}

fn parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    let parameters = operation["parameters"].as_array().unwrap();
    let found = parameters.iter().find(|p| p["name"] == name);
    &found.unwrap_or_else(|| panic!("{name} documented"))["schema"]
}

#[sqlx::test]
async fn the_openapi_document_types_every_parameter_and_response(pool: PgPool) {
    let app = api_app(&pool, "[api]\nmax_page_size = 50").await;
    let doc: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    let list = &doc["paths"]["/v1/access_codes"]["get"];
    let one = &doc["paths"]["/v1/access_codes/{access_code_id}"]["get"];

    let limit = parameter(list, "limit");
    assert_eq!((&limit["type"], &limit["minimum"], &limit["maximum"]), (&json!("integer"), &json!(1), &json!(50)));
    assert_eq!(limit["default"], 50, "100, or api.max_page_size when smaller");
    for name in ["has_errors", "has_warnings", "deleted"] {
        assert_eq!(parameter(list, name)["type"], "boolean", "{name}");
    }
    assert_eq!(parameter(list, "status")["enum"], json!(["setting", "set", "unset", "removing", "unknown"]));
    let since = parameter(list, "updated_since");
    assert_eq!((&since["type"], &since["format"]), (&json!("string"), &json!("date-time")));
    for id in [parameter(list, "device_id"), parameter(one, "access_code_id")] {
        assert_eq!((&id["type"], &id["minLength"], &id["maxLength"]), (&json!("string"), &json!(1), &json!(255)));
        assert_eq!(id["pattern"], r"^[^\u0000]*$", "no NUL");
    }
    let cursor = parameter(list, "cursor");
    assert_eq!((&cursor["minLength"], &cursor["maxLength"]), (&json!(2), &json!(1360)));
    assert!(cursor["pattern"].as_str().unwrap().starts_with("^(?:"));

    let error_body = json!({ "$ref": "#/components/schemas/ApiErrorBody" });
    for (operation, statuses) in [(list, &["400", "401", "503"][..]), (one, &["400", "401", "404", "503"][..])] {
        assert!(operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].is_string());
        for status in statuses {
            assert_eq!(operation["responses"][status]["content"]["application/json"]["schema"], error_body, "{status}");
        }
        assert!(operation["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        // hyper's own answer to an oversized request head, without a body.
        assert!(operation["responses"]["431"].is_object() && operation["responses"]["431"].get("content").is_none());
    }
    let schema = &doc["components"]["schemas"]["ApiErrorBody"];
    assert_eq!(schema["required"], json!(["error", "message"]));
    assert_eq!(schema["properties"]["parameter"]["type"], "string");
    assert_eq!(doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().unwrap().len(), 6, "too_many_streams too");
}
