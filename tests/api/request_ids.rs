//! Traceable failures: the `seam-request-id` of every failed Seam answer is kept
//! where an operator looks (the worker's log, `last_error`, `dead-letters list`,
//! catch-up's and the import's `last_error`), to quote to Seam support.

use seam_access_sync::jobs::worker::{TaskOutcome, TaskResult};
use seam_access_sync::store::admin;
use seam_access_sync::store::queue::Failure;
use serde_json::json;
use sqlx::PgPool;
use test_kit::{Answer, Mode, StandIn};

use crate::helpers::*;
use crate::operations::{cli, stdout};

async fn last_error(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>("SELECT last_error FROM access_code_refetches WHERE access_code_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
        .expect("a last_error")
}

async fn deliver_change(app: &TestApp, message_id: &str, id: &str) {
    let event = access_code_event("access_code.changed", id, "2026-11-25T10:00:00Z");
    assert!(app.deliver(message_id, &event.to_string()).await.status().is_success());
}

#[sqlx::test]
async fn a_failed_fetch_keeps_seams_request_id_in_last_error_and_the_log(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer("ac_1", Answer::status(500).header("seam-request-id", "req_abc123"));
    deliver_change(&app, "msg_1", "ac_1").await;
    let done = worker.drain().await.unwrap();
    assert!(
        matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(Failure::Retry { .. }), .. }]),
        "{done:?}"
    );
    let error = last_error(&pool, "ac_1").await;
    assert!(error.starts_with("HTTP 500") && error.ends_with(" (seam-request-id: req_abc123)"), "{error}");
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("re-fetch failed; will retry") && line.contains("req_abc123")),
        "the worker's log line names the request"
    );

    // A header that is no plain id is dropped, never stored or logged.
    let hostile = format!("req_{}", "x".repeat(300));
    seam.answer("ac_1", Answer::status(503).header("seam-request-id", &hostile));
    make_due(&pool).await;
    worker.drain().await.unwrap();
    let error = last_error(&pool, "ac_1").await;
    assert!(error.starts_with("HTTP 503") && !error.contains("seam-request-id"), "{error}");
    assert!(!captured_logs().contains(&hostile));
}

#[sqlx::test]
async fn a_dead_letter_lists_seams_request_id_even_when_its_error_is_cut(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let message = format!("access_code_id is invalid: {}", "because ".repeat(30));
    let invalid = json!({"error": {"type": "invalid_input", "message": message}, "ok": false});
    seam.answer("ac_1", Answer::json(400, invalid).header("seam-request-id", "req_dead400"));
    deliver_change(&app, "msg_1", "ac_1").await;
    let done = worker.drain().await.unwrap();
    assert!(matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(Failure::DeadLetter), .. }]));

    let letters = admin::dead_letters(&pool).await.unwrap();
    let error = letters[0].last_error.as_deref().unwrap();
    assert!(error.starts_with("HTTP 400") && error.ends_with(" (seam-request-id: req_dead400)"), "{error}");
    assert!(error.chars().count() > 100, "long enough to be cut in the table: {error}");
    let listed = stdout(&cli(&pool, &["dead-letters", "list"]));
    let row = listed.lines().find(|line| line.starts_with("ac_1")).expect("a row for ac_1");
    assert!(row.contains("HTTP 400") && row.ends_with("… (seam-request-id: req_dead400)"), "{listed}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&pool, &["dead-letters", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["last_error"], error);
}

#[sqlx::test]
async fn a_rejected_api_key_names_seams_request_id(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, key_status) = worker(&pool, &seam.url(), "");
    let unauthorized = json!({"error": {"type": "unauthorized", "message": "Unauthorized"}, "ok": false});
    seam.answer("ac_1", Answer::json(401, unauthorized).header("seam-request-id", "req_key401"));
    deliver_change(&app, "msg_1", "ac_1").await;
    worker.drain().await.unwrap();
    let reason = key_status.rejection().unwrap();
    assert_eq!(reason, "HTTP 401: unauthorized: Unauthorized (seam-request-id: req_key401)");
    let error = last_error(&pool, "ac_1").await;
    assert_eq!(error, "API key rejected: HTTP 401: unauthorized: Unauthorized (seam-request-id: req_key401)");
    assert!(
        captured_logs().lines().any(|line| line.contains("Seam rejected the API key") && line.contains("req_key401")),
        "the loud log line names the request"
    );
}

#[sqlx::test]
async fn a_failing_event_log_names_seams_request_id_in_catch_up_state(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_mode(Mode::Status(500));
    seam.send_request_id(Some("req_events500"));
    let (catch_up, _) = catch_up(&pool, &seam.url(), "");
    let error = catch_up.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("(seam-request-id: req_events500)"), "{error:#}");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM catch_up_state").fetch_one(&pool).await.unwrap();
    let stored = stored.unwrap();
    assert!(stored.contains("/events/list failed: HTTP 500"), "{stored}");
    assert!(stored.ends_with(" (seam-request-id: req_events500)"), "{stored}");
    let status = stdout(&cli(&pool, &["status"]));
    assert!(status.contains("catch-up error") && status.contains("req_events500"), "{status}");
}

#[sqlx::test]
async fn a_failing_list_names_seams_request_id_in_the_import_run(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_devices(vec![json!({"device_id": "device_1", "capabilities_supported": ["access_code"]})]);
    seam.fail_lists_after(0, 503);
    seam.send_request_id(Some("req_list503"));
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let error = import.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("(seam-request-id: req_list503)"), "{error:#}");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM import_runs").fetch_one(&pool).await.unwrap();
    let stored = stored.unwrap();
    assert!(stored.contains("/devices/list failed: HTTP 503"), "{stored}");
    assert!(stored.ends_with(" (seam-request-id: req_list503)"), "{stored}");
}
