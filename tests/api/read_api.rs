//! The read API under /v1: auth, filters, pagination, details, OpenAPI.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

const TOKEN: &str = "read-token-1-0123456789abcdef0123456789";

async fn api_app(pool: &PgPool, extra: &str) -> TestApp {
    let tokens = format!("[api]\ntokens = \"other-token-0123456789abcdef0123456789, {TOKEN}\"");
    spawn_app_with(pool.clone(), settings_with("http://127.0.0.1:9", &[&tokens, extra])).await
}

async fn get_v1(app: &TestApp, path_and_query: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(format!("{}{path_and_query}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// Five codes in the mirror, each different in one way the filters look at.
async fn seed(pool: &PgPool) {
    sqlx::query(
        r#"
        INSERT INTO access_codes
            (access_code_id, device_id, workspace_id, name, type, status, warnings, errors, code, access_code,
             deleted_at, fetched_at, updated_at)
        VALUES
            ('ac_a', 'dev_1', 'ws', 'A', 'ongoing', 'set', '[]', '[]', '1111', '{"code":"[redacted]"}', NULL, now(), '2026-11-20T00:00:00Z'),
            ('ac_b', 'dev_1', 'ws', 'B', 'ongoing', 'setting', '[{"warning_code":"delay_in_setting_on_device"}]', '[]', NULL, '{}', NULL, now(), '2026-11-21T00:00:00Z'),
            ('ac_c', 'dev_2', 'ws', 'C', 'ongoing', 'setting', '[]', '[{"error_code":"failed_to_set_on_device"}]', NULL, '{}', NULL, now(), '2026-11-22T00:00:00Z'),
            ('ac_d', 'dev_2', 'ws', 'D', 'time_bound', 'unset', '[]', '[]', NULL, '{}', NULL, now(), '2026-11-23T00:00:00Z'),
            ('ac_e', 'dev_3', 'ws_2', 'E', 'ongoing', 'set', '[]', '[]', NULL, '{}', '2026-11-24T00:00:00Z', now(), '2026-11-24T00:00:00Z')
        "#,
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn ids(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_codes"].as_array().unwrap().iter().map(|c| c["access_code_id"].as_str().unwrap().to_owned()).collect()
}

#[sqlx::test]
async fn without_a_configured_token_the_read_api_does_not_exist(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for path in ["/v1/access_codes", "/v1/access_codes/ac_a", "/v1/openapi.json"] {
        assert_eq!(get_v1(&app, path, Some(TOKEN)).await.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[sqlx::test]
async fn a_missing_or_wrong_token_is_refused(pool: PgPool) {
    seed(&pool).await;
    let app = api_app(&pool, "").await;
    for token in [None, Some("wrong"), Some(""), Some("read-token-")] {
        let response = get_v1(&app, "/v1/access_codes", token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "unauthorized");
    }
    assert_eq!(ids(get_v1(&app, "/v1/access_codes", Some(TOKEN)).await).await.len(), 5);
    assert_eq!(
        get_v1(&app, "/v1/access_codes", Some("other-token-0123456789abcdef0123456789")).await.status(),
        StatusCode::OK,
        "either token"
    );
}

#[sqlx::test]
async fn filters_select_the_right_codes(pool: PgPool) {
    seed(&pool).await;
    let app = api_app(&pool, "").await;
    let cases = [
        ("status=setting", vec!["ac_b", "ac_c"]),
        ("device_id=dev_2", vec!["ac_c", "ac_d"]),
        ("workspace_id=ws_2", vec!["ac_e"]),
        ("workspace_id=ws&device_id=dev_1", vec!["ac_a", "ac_b"]),
        ("has_errors=true", vec!["ac_c"]),
        ("has_errors=false&status=setting", vec!["ac_b"]),
        ("has_warnings=true", vec!["ac_b"]),
        ("deleted=true", vec!["ac_e"]),
        ("deleted=false&status=set", vec!["ac_a"]),
        ("updated_since=2026-11-22T00:00:00Z", vec!["ac_c", "ac_d", "ac_e"]),
        ("status=removing", vec![]),
    ];
    for (query, expected) in cases {
        let found = ids(get_v1(&app, &format!("/v1/access_codes?{query}"), Some(TOKEN)).await).await;
        assert_eq!(found, expected, "{query}");
    }
}

#[sqlx::test]
async fn pages_walk_every_code_once_in_a_stable_order(pool: PgPool) {
    seed(&pool).await;
    let app = api_app(&pool, "").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = cursor.as_ref().map_or("limit=2".to_owned(), |c| format!("limit=2&cursor={c}"));
        let body: Value = get_v1(&app, &format!("/v1/access_codes?{query}"), Some(TOKEN)).await.json().await.unwrap();
        let page: Vec<String> = body["access_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["access_code_id"].as_str().unwrap().into())
            .collect();
        assert!(page.len() <= 2);
        seen.extend(page);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["ac_a", "ac_b", "ac_c", "ac_d", "ac_e"]);
}

#[sqlx::test]
async fn bad_query_parameters_are_named(pool: PgPool) {
    let app = api_app(&pool, "[api]\nmax_page_size = 50").await;
    let cases = [
        ("cursor=%%%", "cursor"),
        ("cursor=not*base64", "cursor"),
        ("cursor=", "cursor"),
        ("limit=0", "limit"),
        ("limit=51", "limit"),
        ("limit=ten", "limit"),
        ("has_errors=yes", "has_errors"),
        ("has_warnings=1", "has_warnings"),
        ("deleted=TRUE", "deleted"),
        ("updated_since=yesterday", "updated_since"),
        ("status=", "status"),
        ("colour=blue", "colour"),
    ];
    for (query, parameter) in cases {
        let response = get_v1(&app, &format!("/v1/access_codes?{query}"), Some(TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["error"].as_str(), body["parameter"].as_str()),
            (Some("invalid_parameter"), Some(parameter)),
            "{query}: {body}"
        );
    }
}

#[sqlx::test]
async fn one_code_comes_with_its_history_and_events_and_without_its_pin(pool: PgPool) {
    seed(&pool).await;
    sqlx::query(
        "INSERT INTO access_code_history (access_code_id, change, status, warnings, errors, event_type, fetched_at)
         VALUES ('ac_a', 'created', 'setting', '[]', '[]', 'access_code.created', now()),
                ('ac_a', 'changed', 'set', '[]', '[]', 'access_code.set_on_device', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(
        "UPDATE access_code_history SET changes = '{status_changed,name_changed}' WHERE change = 'changed';
         UPDATE access_codes SET connected_account_id = 'ca_1', seam_created_at = '2026-11-25T09:00:00Z',
                is_backup_access_code_available = true, pending_mutations = '[{\"mutation_code\": \"creating\"}]'
         WHERE access_code_id = 'ac_a'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO seam_events (event_id, event_type, access_code_id, action, payload)
         VALUES ('ev_1', 'access_code.set_on_device', 'ac_a', 'refetch', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let app = api_app(&pool, "").await;
    let response = get_v1(&app, "/v1/access_codes/ac_a", Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "set");
    assert_eq!(body["history"].as_array().unwrap().len(), 2);
    assert_eq!(body["history"][1]["event_type"], "access_code.set_on_device");
    assert_eq!(body["history"][1]["changes"], json!(["status_changed", "name_changed"]));
    assert_eq!(body["history"][0]["origin"], "fetch");
    assert_eq!(body["recent_events"][0]["event_id"], "ev_1");
    assert_eq!(body["connected_account_id"], "ca_1");
    assert_eq!(body["created_at"], "2026-11-25T09:00:00Z");
    assert_eq!(body["is_backup_access_code_available"], true);
    assert_eq!(body["is_backup"], Value::Null);
    assert_eq!(body["pending_mutations"][0]["mutation_code"], "creating");
    assert!(body.get("code").is_none(), "no PIN unless store_pins: {body}");
    assert!(!body.to_string().contains("1111"));

    let missing = get_v1(&app, "/v1/access_codes/nope", Some(TOKEN)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"], "not_found");
}

#[sqlx::test]
async fn the_pin_is_served_only_when_the_user_stores_pins(pool: PgPool) {
    seed(&pool).await;
    let app = api_app(&pool, "store_pins = true").await;
    let body: Value = get_v1(&app, "/v1/access_codes/ac_a", Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(body["code"], json!("1111"));
}

#[sqlx::test]
async fn the_openapi_document_describes_the_read_api(pool: PgPool) {
    let app = api_app(&pool, "").await;
    let doc: Value = get_v1(&app, "/v1/openapi.json", None).await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/access_codes"]["get"].is_object());
    assert!(doc["paths"]["/v1/access_codes/{access_code_id}"]["get"].is_object());
    let params: Vec<&str> = doc["paths"]["/v1/access_codes"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "status",
        "device_id",
        "workspace_id",
        "has_errors",
        "has_warnings",
        "deleted",
        "updated_since",
        "limit",
        "cursor",
    ] {
        assert!(params.contains(&name), "{name} documented");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}
