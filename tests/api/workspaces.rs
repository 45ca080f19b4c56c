//! Many workspaces: each event verified by its own workspace's secret, each code
//! fetched with its own workspace's credential, events of unknown workspaces kept
//! until one is added, and the start refused for credentials Seam will not take.

use std::sync::Arc;

use reqwest::StatusCode;
use seam_access_sync::config::Settings;
use seam_access_sync::jobs::worker::Worker;
use seam_access_sync::seam::workspaces::{StartRefusal, Workspaces};
use seam_access_sync::telemetry::metrics::Metrics;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::StandIn;

use crate::helpers::*;

/// A read-API token, for `/readyz`'s detail.
const OPERATOR: &str = "operator-token-0123456789abcdef0123";

/// A third test secret (32 bytes), for the secret that verifies any workspace.
const ANY_SECRET: &str = "whsec_dGhpcmQtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFiY2Q=";

/// Workspaces A (`SECRET`) and B (`NEW_SECRET`), each with its own key; no
/// `SEAM_API_KEY`; `extra` on top.
fn two_workspaces(seam_url: &str, extra: &str) -> Settings {
    let workspaces = format!(
        r#"
        [seam]
        api_key = ""
        [webhook]
        secret = ""
        [[workspaces]]
        name = "Harbour View"
        workspace_id = "ws_a"
        api_key = "seam_key_a"
        webhook_secret = "{SECRET}"
        [[workspaces]]
        name = "Pine Lodge"
        workspace_id = "ws_b"
        api_key = "seam_key_b"
        webhook_secret = "{NEW_SECRET}"
        "#
    );
    settings_with(seam_url, &[&workspaces, extra])
}

fn worker_of(pool: &PgPool, settings: &Settings) -> (Worker, Workspaces) {
    let entries = settings.workspace_entries().expect("workspaces");
    let workspaces = Workspaces::new(&entries, &settings.seam, 0).expect("clients");
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(pool.clone(), workspaces.clone(), settings.worker.clone(), settings.store_pins, metrics);
    (worker, workspaces)
}

fn event(workspace_id: &str, access_code_id: &str) -> String {
    let mut event = access_code_event("access_code.set_on_device", access_code_id, "2026-11-25T10:00:00Z");
    event["workspace_id"] = json!(workspace_id);
    event.to_string()
}

fn code(workspace_id: &str, access_code_id: &str) -> Value {
    json!({"access_code_id": access_code_id, "device_id": "device_1", "workspace_id": workspace_id,
           "status": "set", "type": "ongoing", "name": "Guest", "is_managed": true, "warnings": [], "errors": []})
}

async fn deliver_signed(app: &TestApp, secret: &str, message_id: &str, body: &str) -> reqwest::Response {
    let headers = svix_headers(secret, message_id, app.clock_now(), body.as_bytes());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    app.post_webhook(&headers, body.as_bytes().to_vec()).await
}

#[sqlx::test]
async fn each_code_is_fetched_with_its_own_workspaces_key(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    let settings = two_workspaces(&seam.url(), "");
    let app = spawn_app_with(pool.clone(), settings.clone()).await;
    seam.set_code("ac_a", code("ws_a", "ac_a"));
    seam.set_code("ac_b", code("ws_b", "ac_b"));
    assert_eq!(deliver_signed(&app, SECRET, "m_a", &event("ws_a", "ac_a")).await.status(), StatusCode::OK);
    assert_eq!(deliver_signed(&app, NEW_SECRET, "m_b", &event("ws_b", "ac_b")).await.status(), StatusCode::OK);
    let (worker, _) = worker_of(&pool, &settings);
    worker.drain().await.unwrap();
    let mut used = seam.credentials_used("/access_codes/get");
    used.sort();
    assert_eq!(used, vec!["seam_key_a", "seam_key_b"]);
    let workspaces: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT access_code_id, workspace_id FROM access_codes ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        workspaces,
        vec![("ac_a".to_owned(), Some("ws_a".to_owned())), ("ac_b".to_owned(), Some("ws_b".to_owned()))]
    );
}

#[sqlx::test]
async fn a_workspaces_secret_never_verifies_another_workspaces_event(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    let app = spawn_app_with(pool.clone(), two_workspaces(&seam.url(), "")).await;
    // B's event signed with A's secret: refused, nothing written, counted.
    let refused = deliver_signed(&app, SECRET, "m_1", &event("ws_b", "ac_b")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "workspace_mismatch");
    assert_eq!(written(&pool).await, (0, 0, 0));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("seam_access_sync_webhook_workspace_mismatches_total 1"), "{metrics}");
    // An event naming no workspace cannot be told apart: refused too.
    let mut anonymous: Value = serde_json::from_str(&event("ws_a", "ac_a")).unwrap();
    anonymous.as_object_mut().unwrap().remove("workspace_id");
    let refused = deliver_signed(&app, SECRET, "m_2", &anonymous.to_string()).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // The right secret passes.
    assert_eq!(deliver_signed(&app, NEW_SECRET, "m_3", &event("ws_b", "ac_b")).await.status(), StatusCode::OK);
}

#[sqlx::test]
async fn an_event_of_an_unconfigured_workspace_waits_until_that_workspace_is_added(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    let unscoped = format!("[webhook]\nsecret = \"{ANY_SECRET}\"");
    let settings = two_workspaces(&seam.url(), &unscoped);
    let operator = format!("{unscoped}\n[server]\nrun_mode = \"all\"\n[api]\ntokens = \"{OPERATOR}\"");
    let app = spawn_app_with(pool.clone(), two_workspaces(&seam.url(), &operator)).await;
    seam.set_code("ac_c", code("ws_c", "ac_c"));
    let stored = deliver_signed(&app, ANY_SECRET, "m_c", &event("ws_c", "ac_c")).await;
    assert_eq!(stored.status(), StatusCode::OK, "the signature was valid: acknowledged");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("seam_access_sync_events_unroutable_total 1"), "{metrics}");

    let (worker, _) = worker_of(&pool, &settings);
    assert!(worker.drain().await.unwrap().is_empty(), "no credential reaches ws_c: nothing is claimed");
    assert_eq!(seam.calls_to("/access_codes/get"), 0);
    assert_eq!(count(&pool, "access_code_refetches").await, 1, "it waits in the queue");
    let ready = app.http.get(format!("{}/readyz", app.address)).bearer_auth(OPERATOR).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "waiting for a workspace is no reason to be unready");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["unroutable"], json!({"refetches": 1, "by_workspace": [{"workspace_id": "ws_c", "refetches": 1}]}));
    // `status`, with the same workspaces configured, says so too.
    let file = std::env::temp_dir().join(format!("sas_status_{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&file, two_workspaces_toml().replace("[seam]\n        api_key = \"\"", "")).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
        .args(["status"])
        .env("DATABASE_URL", test_kit::database_url(&pool.connect_options()))
        .env("SEAM_WORKSPACES_FILE", &file)
        .env_remove("SEAM_API_KEY")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("unroutable          1 for ws_c"), "{text}{}", String::from_utf8_lossy(&status.stderr));

    // The operator adds workspace C and restarts: the waiting code is fetched, with C's key.
    let added = format!("{}\n[[workspaces]]\nworkspace_id = \"ws_c\"\napi_key = \"seam_key_c\"", two_workspaces_toml());
    let settings = settings_with(&seam.url(), &[&added, &unscoped]);
    let (worker, _) = worker_of(&pool, &settings);
    assert_eq!(worker.drain().await.unwrap().len(), 1);
    assert_eq!(seam.credentials_used("/access_codes/get"), vec!["seam_key_c"]);
    assert_eq!(count(&pool, "access_codes").await, 1);
}

/// The two workspaces' TOML, to add entries to in the same document (a later
/// settings layer replaces the whole list).
fn two_workspaces_toml() -> String {
    format!(
        r#"
        [seam]
        api_key = ""
        [webhook]
        secret = ""
        [[workspaces]]
        workspace_id = "ws_a"
        api_key = "seam_key_a"
        webhook_secret = "{SECRET}"
        [[workspaces]]
        workspace_id = "ws_b"
        api_key = "seam_key_b"
        webhook_secret = "{NEW_SECRET}"
        "#
    )
}

#[sqlx::test]
async fn a_revoked_key_in_one_workspace_leaves_the_others_current(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    let settings = two_workspaces(&seam.url(), "");
    let app = spawn_app_with(pool.clone(), settings.clone()).await;
    seam.set_code("ac_a", code("ws_a", "ac_a"));
    seam.set_code("ac_b", code("ws_b", "ac_b"));
    seam.revoke("seam_key_a");
    deliver_signed(&app, SECRET, "m_a", &event("ws_a", "ac_a")).await;
    deliver_signed(&app, NEW_SECRET, "m_b", &event("ws_b", "ac_b")).await;
    let (worker, workspaces) = worker_of(&pool, &settings);
    worker.drain().await.unwrap();
    let mirrored: Vec<String> =
        sqlx::query_scalar("SELECT access_code_id FROM access_codes").fetch_all(&pool).await.unwrap();
    assert_eq!(mirrored, vec!["ac_b"], "B's mirror is current");
    let (attempts, last_error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM access_code_refetches WHERE access_code_id = 'ac_a'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 0, "a key failure uses up no attempt");
    assert!(last_error.unwrap().contains("401"));
    let states = workspaces.key_states();
    assert!(states[0].2.as_deref().unwrap().contains("401"), "{states:?}");
    assert_eq!(states[1].2, None, "{states:?}");
}

#[sqlx::test]
async fn seam_says_which_workspace_each_key_reaches_and_refusals_are_named(pool: PgPool) {
    drop(pool);
    let seam = StandIn::start().await.unwrap();
    let settings = settings_with(
        &seam.url(),
        &[
            "[seam]\napi_key = \"\"\n[[workspaces]]\nname = \"A\"\napi_key = \"seam_key_a\"\n[[workspaces]]\nname = \"B\"\napi_key = \"seam_key_b\"",
        ],
    );
    let workspaces = || Workspaces::new(&settings.workspace_entries().unwrap(), &settings.seam, 0).unwrap();

    // Seam not answering for the keys yet: nothing refused, both unknown, codes wait.
    let (refusals, unknown) = workspaces().resolve().await;
    assert_eq!((refusals, unknown), (vec![], 2));

    seam.set_workspace("seam_key_a", "ws_a");
    seam.set_workspace("seam_key_b", "ws_b");
    let resolved = workspaces();
    assert_eq!(resolved.resolve().await, (vec![], 0));
    assert_eq!((resolved.id_of(0), resolved.id_of(1)), (Some("ws_a".to_owned()), Some("ws_b".to_owned())));

    seam.set_workspace("seam_key_b", "ws_a");
    let (refusals, _) = workspaces().resolve().await;
    assert!(
        matches!(&refusals[..], [StartRefusal::Duplicate { workspace_id, .. }] if workspace_id == "ws_a"),
        "{refusals:?}"
    );

    seam.revoke("seam_key_b");
    let (refusals, _) = workspaces().resolve().await;
    assert!(matches!(&refusals[..], [StartRefusal::Rejected { label, .. }] if label == "B"), "{refusals:?}");
    assert!(refusals[0].to_string().contains("401"), "{}", refusals[0]);
    assert!(!refusals[0].to_string().contains("seam_key_b"), "never the key itself");
}

#[sqlx::test]
async fn the_binary_refuses_to_start_with_exit_code_2_and_the_reason(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_workspace("seam_key_a", "ws_a");
    seam.revoke("seam_key_b");
    let dir = std::env::temp_dir().join(format!("sas_workspaces_{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = test_kit::database_url(&pool.connect_options());
    let serve = |file: &str, contents: &str| {
        let path = dir.join(file);
        std::fs::write(&path, contents).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
            .args(["serve"])
            .env("DATABASE_URL", &url)
            .env("SEAM_WORKSPACES_FILE", &path)
            .env("SEAM_API_URL", seam.url())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("APP_LOG__FORMAT", "text")
            .env_remove("SEAM_API_KEY")
            .env_remove("SEAM_WEBHOOK_SECRET")
            .output()
            .expect("the binary runs")
    };
    let cases = [
        (
            "client_session.toml",
            format!("[[workspaces]]\napi_key = \"seam_cst1_abc\"\nwebhook_secret = \"{SECRET}\"\n"),
            "client session token",
        ),
        (
            "publishable.json",
            format!(r#"{{"workspaces": [{{"api_key": "seam_pk1_abc", "webhook_secret": "{SECRET}"}}]}}"#),
            "publishable key",
        ),
        (
            "token_without_workspace.toml",
            "[[workspaces]]\npersonal_access_token = \"seam_at1_abc\"\n".to_owned(),
            "without a workspace_id",
        ),
        (
            "revoked.toml",
            format!(
                "[[workspaces]]\nname = \"A\"\napi_key = \"seam_key_a\"\nwebhook_secret = \"{SECRET}\"\n\
                 [[workspaces]]\nname = \"B\"\napi_key = \"seam_key_b\"\n"
            ),
            "B: Seam rejected the credential: HTTP 401",
        ),
    ];
    for (file, contents, reason) in cases {
        let output = serve(file, &contents);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains(reason), "{file}: {stderr}");
        assert!(!stderr.contains("abc\"") && !stderr.contains("seam_key_b"), "{file}: no credential in {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
