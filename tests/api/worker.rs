//! The worker and the mirror: webhooks in over HTTP, Seam played by the kit's
//! stand-in, the queue driven step by step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use seam_access_sync::jobs::worker::{TaskOutcome, TaskResult};
use seam_access_sync::seam::client::{AccessCode, FetchedCode};
use seam_access_sync::seam::event::{CodeEndpoint, EventRef};
use seam_access_sync::store::mirror::{self, Applied, ChangeKind, Observed};
use seam_access_sync::store::queue::{self, Completion, Failure};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::{Answer, StandIn};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;
use seam_access_sync::seam::workspaces::CLAIM_EVERYTHING;

/// A managed code as Seam answers it (the kit's documented code) in this state.
pub(crate) fn code_json(id: &str, status: &str, warnings: Value, errors: Value) -> Value {
    fixtures::with(
        fixtures::access_code(id),
        json!({ "status": status, "warnings": warnings, "errors": errors, "name": "Guest 12", "code": "4321" }),
    )
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: Option<String>,
    warnings: Value,
    errors: Value,
    deleted_at: Option<DateTime<Utc>>,
    last_event_type: Option<String>,
    access_code: Option<Value>,
    code: Option<String>,
    is_managed: bool,
}

async fn mirror_row(pool: &PgPool, id: &str) -> Row {
    sqlx::query_as(
        "SELECT status, warnings, errors, deleted_at, last_event_type, access_code, code, is_managed
         FROM access_codes WHERE access_code_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("mirror row")
}

async fn history(pool: &PgPool, id: &str) -> Vec<(String, Option<String>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT change, status, event_type, warnings::text FROM access_code_history
         WHERE access_code_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn queue_row(pool: &PgPool, id: &str) -> Option<(i32, Option<DateTime<Utc>>, Option<String>, f64)> {
    sqlx::query_as(
        "SELECT attempts, dead_lettered_at, last_error,
                EXTRACT(EPOCH FROM next_attempt_at - now())::float8
         FROM access_code_refetches WHERE access_code_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

fn stored(outcomes: &[TaskOutcome]) -> usize {
    outcomes.iter().filter(|o| matches!(o, TaskOutcome::Executed { result: TaskResult::Stored { .. }, .. })).count()
}

#[sqlx::test]
async fn the_mirror_follows_a_code_from_creation_to_removal(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let warning = json!([{"warning_code": "delay_in_setting_on_device", "message": "Hub offline"}]);
    let error =
        json!([{"error_code": "failed_to_set_on_device", "message": "Lock memory full", "is_access_code_error": true}]);
    let steps = [
        ("access_code.created", Answer::found(code_json("ac_1", "setting", json!([]), json!([])))),
        ("access_code.set_on_device", Answer::found(code_json("ac_1", "set", json!([]), json!([])))),
        ("access_code.delay_in_setting_on_device", Answer::found(code_json("ac_1", "set", warning.clone(), json!([])))),
        (
            "access_code.failed_to_set_on_device",
            Answer::found(code_json("ac_1", "setting", warning.clone(), error.clone())),
        ),
        ("access_code.removed_from_device", Answer::not_found()),
    ];
    for (i, (event_type, answer)) in steps.into_iter().enumerate() {
        seam.answer("ac_1", answer);
        let event = access_code_event(event_type, "ac_1", &format!("2026-11-25T10:00:0{i}Z"));
        assert_eq!(app.deliver(&format!("msg_{i}"), &event.to_string()).await.status(), StatusCode::OK);
        let done = worker.drain().await.unwrap();
        assert_eq!(stored(&done), 1, "step {event_type}: {done:?}");
        let row = mirror_row(&pool, "ac_1").await;
        assert_eq!(row.last_event_type.as_deref(), Some(event_type));
        match i {
            0 => assert_eq!(
                (row.status.as_deref(), &row.warnings, &row.errors),
                (Some("setting"), &json!([]), &json!([]))
            ),
            1 => assert_eq!(row.status.as_deref(), Some("set")),
            2 => assert_eq!((row.status.as_deref(), &row.warnings), (Some("set"), &warning)),
            3 => assert_eq!((row.status.as_deref(), &row.errors), (Some("setting"), &error)),
            _ => assert!(row.deleted_at.is_some(), "404 marks the code deleted"),
        }
    }
    let timeline = history(&pool, "ac_1").await;
    let summary: Vec<(&str, Option<&str>, Option<&str>)> =
        timeline.iter().map(|(c, s, e, _)| (c.as_str(), s.as_deref(), e.as_deref())).collect();
    assert_eq!(
        summary,
        vec![
            ("created", Some("setting"), Some("access_code.created")),
            ("changed", Some("set"), Some("access_code.set_on_device")),
            ("changed", Some("set"), Some("access_code.delay_in_setting_on_device")),
            ("changed", Some("setting"), Some("access_code.failed_to_set_on_device")),
            ("deleted", Some("setting"), Some("access_code.removed_from_device")),
        ]
    );
    assert_eq!(count(&pool, "access_code_refetches").await, 0, "the queue is empty");
}

#[sqlx::test]
async fn a_fetch_that_changes_nothing_adds_no_history(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    for i in 0..3 {
        let event = access_code_event("access_code.changed", "ac_1", &format!("2026-11-25T10:00:0{i}Z"));
        app.deliver(&format!("msg_{i}"), &event.to_string()).await;
        worker.drain().await.unwrap();
    }
    assert_eq!(seam.calls(), 3);
    assert_eq!(history(&pool, "ac_1").await.len(), 1, "only the creation");
}

#[sqlx::test]
async fn unknown_codes_and_missing_fields_are_stored_not_rejected(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let minimal = json!({
        "access_code_id": "ac_1",
        "device_id": "device_1",
        "status": "setting",
        "warnings": [{"warning_code": "warning_invented_in_2027", "message": "new", "extra": {"x": 1}}],
        "errors": [{"error_code": "error_invented_in_2027", "message": "new", "is_bridge_error": true}],
        "field_invented_in_2027": 7
    });
    seam.answer("ac_1", Answer::found(minimal));
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;
    worker.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_1").await;
    assert_eq!(row.warnings[0]["warning_code"], "warning_invented_in_2027");
    assert_eq!(row.errors[0]["error_code"], "error_invented_in_2027");
    assert_eq!(row.access_code.unwrap()["field_invented_in_2027"], 7);
}

#[sqlx::test]
async fn the_pin_is_redacted_in_the_mirror_unless_opted_in(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    app.deliver("msg_1", &access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string())
        .await;
    let (redacting, _) = worker(&pool, &seam.url(), "");
    redacting.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_1").await;
    assert_eq!((row.code, row.access_code.unwrap()["code"].clone()), (None, json!("[redacted]")));

    app.deliver("msg_2", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:01Z").to_string()).await;
    let (keeping, _) = worker(&pool, &seam.url(), "store_pins = true");
    keeping.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_1").await;
    assert_eq!((row.code.as_deref(), row.access_code.unwrap()["code"].clone()), (Some("4321"), json!("4321")));
}

#[sqlx::test]
async fn unmanaged_codes_are_fetched_from_the_unmanaged_endpoint(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let mut unmanaged = code_json("ac_u", "set", json!([]), json!([]));
    unmanaged["is_managed"] = json!(false);
    seam.set_code("ac_u", unmanaged);
    app.deliver(
        "msg_u",
        &access_code_event("access_code.unmanaged.created", "ac_u", "2026-11-25T10:00:00Z").to_string(),
    )
    .await;
    worker.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_u").await;
    assert_eq!((row.status.as_deref(), row.is_managed), (Some("set"), false));
    assert_eq!(seam.calls_to("/access_codes/unmanaged/get"), 1);
}

#[sqlx::test]
async fn a_code_gone_before_its_first_fetch_is_recorded_as_deleted(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer("ac_gone", Answer::not_found());
    app.deliver("msg_1", &access_code_event("access_code.deleted", "ac_gone", "2026-11-25T10:00:00Z").to_string())
        .await;
    worker.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_gone").await;
    assert_eq!(row.status, None);
    assert!(row.deleted_at.is_some());
    assert_eq!(history(&pool, "ac_gone").await.len(), 1);
}

#[sqlx::test]
async fn seam_failing_with_500_then_answering_ends_right_after_two_calls(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer_next(Answer::status(500));
    seam.set_code("ac_1", code_json("ac_1", "set", json!([]), json!([])));
    app.deliver("msg_1", &access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string())
        .await;

    let first = worker.drain().await.unwrap();
    assert!(
        matches!(
            &first[..],
            [TaskOutcome::Executed { result: TaskResult::Failed(Failure::Retry { counts: true, .. }), .. }]
        ),
        "{first:?}"
    );
    let (attempts, dead, error, due_in) = queue_row(&pool, "ac_1").await.unwrap();
    assert_eq!((attempts, dead, error.unwrap().contains("500")), (1, None, true));
    assert!((0.4..=1.1).contains(&due_in), "first backoff is 50-100% of 1 s, got {due_in}");

    make_due(&pool).await;
    assert_eq!(stored(&worker.drain().await.unwrap()), 1);
    assert_eq!(mirror_row(&pool, "ac_1").await.status.as_deref(), Some("set"));
    assert_eq!(seam.calls(), 2);
    assert!(queue_row(&pool, "ac_1").await.is_none());
}

#[sqlx::test]
async fn a_429_is_retried_when_retry_after_says(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer_next(Answer::status(429).header("retry-after", "7"));
    seam.set_code("ac_1", code_json("ac_1", "set", json!([]), json!([])));
    app.deliver("msg_1", &access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string())
        .await;
    worker.drain().await.unwrap();
    let (_, _, _, due_in) = queue_row(&pool, "ac_1").await.unwrap();
    assert!((6.0..=7.1).contains(&due_in), "Retry-After 7 s honoured, got {due_in}");
    // Made due early, it is still not called: the 429 paused the whole client
    // (the breaker), and the attempt it did not make is not counted.
    make_due(&pool).await;
    worker.drain().await.unwrap();
    assert_eq!(seam.calls(), 1);
    let (attempts, _, error, due_in) = queue_row(&pool, "ac_1").await.unwrap();
    assert_eq!(attempts, 1);
    assert!(error.unwrap().contains("not called"));
    assert!((5.0..=7.1).contains(&due_in), "due when the pause ends, got {due_in}");
}

#[sqlx::test]
async fn a_permanent_rejection_becomes_a_dead_letter_and_a_new_event_revives_it(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let invalid = json!({"error": {"type": "invalid_input", "message": "access_code_id is invalid"}, "ok": false});
    seam.answer("ac_1", Answer::json(400, invalid));
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;
    let done = worker.drain().await.unwrap();
    assert!(matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(Failure::DeadLetter), .. }]));
    let (_, dead, error, _) = queue_row(&pool, "ac_1").await.unwrap();
    assert!(dead.is_some());
    assert!(error.unwrap().contains("access_code_id is invalid"));
    make_due(&pool).await;
    assert!(worker.drain().await.unwrap().is_empty(), "a dead letter is not retried by itself");

    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    app.deliver("msg_2", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:01Z").to_string()).await;
    assert_eq!(stored(&worker.drain().await.unwrap()), 1);
    assert_eq!(mirror_row(&pool, "ac_1").await.status.as_deref(), Some("set"));
}

#[sqlx::test]
async fn transient_failures_dead_letter_after_the_attempt_limit(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "[worker]\nmax_attempts = 3");
    seam.answer("ac_1", Answer::status(503));
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;
    for attempt in 1..=3 {
        make_due(&pool).await;
        let done = worker.drain().await.unwrap();
        let expected_dead = attempt == 3;
        assert!(
            matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(f), .. }] if (*f == Failure::DeadLetter) == expected_dead),
            "attempt {attempt}: {done:?}"
        );
    }
    let (attempts, dead, error, _) = queue_row(&pool, "ac_1").await.unwrap();
    assert_eq!((attempts, dead.is_some()), (3, true));
    assert!(error.unwrap().contains("503"));
    assert_eq!(seam.calls(), 3);
}

#[sqlx::test]
async fn a_rejected_api_key_keeps_the_work_and_shows_until_fixed(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, key_status) = worker(&pool, &seam.url(), "[worker]\nmax_attempts = 2");
    let unauthorized = json!({"error": {"type": "unauthorized", "message": "Unauthorized"}, "ok": false});
    seam.answer("ac_1", Answer::json(401, unauthorized));
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;
    for _ in 0..4 {
        make_due(&pool).await;
        let done = worker.drain().await.unwrap();
        assert!(
            matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(Failure::Retry { counts: false, delay }), .. }] if *delay == Duration::from_secs(60)),
            "{done:?}"
        );
    }
    assert!(key_status.rejection().unwrap().contains("401"));
    let (attempts, dead, _, _) = queue_row(&pool, "ac_1").await.unwrap();
    assert_eq!((attempts, dead), (0, None), "key failures never use up attempts");

    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    make_due(&pool).await;
    assert_eq!(stored(&worker.drain().await.unwrap()), 1);
    assert_eq!(key_status.rejection(), None);
    let logs = captured_logs();
    assert!(logs.contains("Seam rejected the API key"));
    assert!(!logs.contains(API_KEY), "the key itself is never logged");
}

#[sqlx::test]
async fn readiness_reports_a_rejected_api_key(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.answer("ac_1", Answer::status(401));
    let token = "readiness-detail-token-0123456789abcdef";
    let extra = format!("[server]\nrun_mode = \"all\"\n[api]\ntokens = \"{token}\"");
    let app = spawn_app_with(pool.clone(), settings(&seam.url(), &extra)).await;
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;
    let readyz = |authorization: Option<String>| {
        let mut request = app.http.get(format!("{}/readyz", app.address));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    let body = eventually("/readyz to answer 503", || async {
        let response = readyz(Some(format!("bearer {token}"))).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(format!("{status} {text}"));
        }
        serde_json::from_str::<Value>(&text).map_err(|e| format!("{status} {text} ({e})"))
    })
    .await;
    assert_eq!(body["seam_api_key"]["ok"], false);
    assert!(body["seam_api_key"]["reason"].as_str().unwrap().contains("401"));
    assert_eq!(body["database"]["ok"], true);
    // Anyone else learns which check failed, not Seam's words.
    let public: Value = readyz(None).await.unwrap().json().await.unwrap();
    assert_eq!(public["seam_api_key"]["ok"], false);
    assert_eq!(public["seam_api_key"]["reason"], "Seam rejected the API key");
}

#[sqlx::test]
async fn events_arriving_out_of_order_leave_the_latest_fetched_state(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    let events = [
        access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:03Z"),
        access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:02Z"),
        access_code_event("access_code.created", "ac_1", "2026-11-25T10:00:01Z"),
    ];
    for (i, event) in events.iter().enumerate() {
        app.deliver(&format!("msg_{i}"), &event.to_string()).await;
        worker.drain().await.unwrap();
    }
    let row = mirror_row(&pool, "ac_1").await;
    assert_eq!(row.status.as_deref(), Some("set"));
    assert_eq!(
        row.last_event_type.as_deref(),
        Some("access_code.set_on_device"),
        "the newest event, not the last to arrive"
    );
}

#[sqlx::test]
async fn an_older_fetch_never_overwrites_a_newer_one(pool: PgPool) {
    let seam_code = |status: &str| FetchedCode {
        code: serde_json::from_value::<AccessCode>(code_json("ac_1", status, json!([]), json!([]))).unwrap(),
        raw: code_json("ac_1", status, json!([]), json!([])),
    };
    let mut conn = pool.acquire().await.unwrap();
    let started_at =
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT now()").fetch_one(&mut *conn).await.unwrap();
    let older = mirror::Fetch {
        access_code_id: "ac_1",
        endpoint: seam_access_sync::seam::event::CodeEndpoint::Managed,
        device_id: Some("device_1"),
        workspace_id: None,
        connected_account_id: None,
        origin: mirror::Origin::Fetch,
        trigger: Default::default(),
        started_at,
    };
    let newer = mirror::Fetch { started_at: started_at + chrono::Duration::seconds(5), ..older.clone() };

    let applied = mirror::apply(&mut conn, &newer, Observed::Found(&seam_code("set")), false).await.unwrap();
    assert!(matches!(applied, Applied::Stored { change: Some(ChangeKind::Created), .. }));
    let applied = mirror::apply(&mut conn, &older, Observed::Found(&seam_code("setting")), false).await.unwrap();
    assert_eq!(applied, Applied::Stale);
    assert_eq!(mirror_row(&pool, "ac_1").await.status.as_deref(), Some("set"));
    assert_eq!(history(&pool, "ac_1").await.len(), 1);
}

fn refetch(id: &str) -> queue::RefetchRequest<'_> {
    queue::RefetchRequest {
        access_code_id: id,
        endpoint: seam_access_sync::seam::event::CodeEndpoint::Managed,
        device_id: Some("device_1"),
        workspace_id: Some("ws_1"),
        connected_account_id: None,
        event: None,
        requests: 1,
    }
}

#[sqlx::test]
async fn fifty_events_for_one_code_in_a_burst_cost_one_fetch(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    let sends = (0..50).map(|i| {
        let event = access_code_event("access_code.changed", "ac_1", &format!("2026-11-25T10:00:{i:02}Z"));
        let app = &app;
        async move { app.deliver(&format!("msg_{i}"), &event.to_string()).await.status() }
    });
    assert!(futures::future::join_all(sends).await.iter().all(|s| *s == StatusCode::OK));
    worker.drain().await.unwrap();
    assert_eq!(seam.calls(), 1);
    assert_eq!(count(&pool, "seam_events").await, 50);
}

#[sqlx::test]
async fn events_arriving_during_a_fetch_cause_exactly_one_more_fetch(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    // The first answer is slow, so the burst below lands while it is in flight.
    seam.answer_next(Answer::found(code_json("ac_1", "setting", json!([]), json!([]))).after(Duration::from_secs(2)));
    seam.set_code("ac_1", code_json("ac_1", "set", json!([]), json!([])));
    app.deliver("msg_first", &access_code_event("access_code.created", "ac_1", "2026-11-25T10:00:00Z").to_string())
        .await;

    let in_flight = tokio::spawn({
        let worker = worker.clone();
        async move { worker.try_execute_task().await.unwrap() }
    });
    eventually("Seam's first call", || async {
        match seam.calls() {
            1 => Ok(()),
            calls => Err(format!("{calls} calls")),
        }
    })
    .await;
    for i in 1..50 {
        let event = access_code_event("access_code.changed", "ac_1", &format!("2026-11-25T10:00:{i:02}Z"));
        assert_eq!(app.deliver(&format!("msg_{i}"), &event.to_string()).await.status(), StatusCode::OK);
    }
    let first = in_flight.await.unwrap();
    assert!(
        matches!(
            &first,
            TaskOutcome::Executed { result: TaskResult::Stored { completion: Completion::RequestedAgain, .. }, .. }
        ),
        "{first:?}"
    );
    assert_eq!(stored(&worker.drain().await.unwrap()), 1);
    assert_eq!(seam.calls(), 2, "50 events, 2 fetches");
    assert_eq!(mirror_row(&pool, "ac_1").await.status.as_deref(), Some("set"), "the mirror ends on the latest state");
}

#[sqlx::test]
async fn a_code_is_claimed_by_one_worker_at_a_time(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, &refetch("ac_1")).await.unwrap();
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        queue::claim_next(&pool, lease, &CLAIM_EVERYTHING),
        queue::claim_next(&pool, lease, &CLAIM_EVERYTHING)
    );
    let claims = [a.unwrap(), b.unwrap()];
    assert_eq!(claims.iter().filter(|c| c.is_some()).count(), 1, "{claims:?}");
    assert!(queue::claim_next(&pool, lease, &CLAIM_EVERYTHING).await.unwrap().is_none(), "held while the lease runs");
}

#[sqlx::test]
async fn a_claim_abandoned_by_a_dead_worker_is_taken_again(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, &refetch("ac_1")).await.unwrap();
    // A worker claims, then dies: its lease runs out.
    let abandoned = queue::claim_next(&pool, Duration::from_secs(60), &CLAIM_EVERYTHING).await.unwrap().unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    assert!(worker.drain().await.unwrap().is_empty(), "not while the lease runs");
    sqlx::query("UPDATE access_code_refetches SET claimed_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(stored(&worker.drain().await.unwrap()), 1);
    assert_eq!(mirror_row(&pool, "ac_1").await.status.as_deref(), Some("set"));
    // Were the dead worker to come back, its result would be dropped.
    let mut tx = pool.begin().await.unwrap();
    assert!(!queue::lock_claim(&mut tx, &abandoned).await.unwrap());
}

#[sqlx::test]
async fn two_workers_share_the_queue_and_fetch_each_code_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    for i in 0..30 {
        let id = format!("ac_{i}");
        seam.answer(&id, Answer::found(code_json(&id, "set", json!([]), json!([]))).after(Duration::from_millis(20)));
    }
    for i in 0..30 {
        let event = access_code_event("access_code.set_on_device", &format!("ac_{i}"), "2026-11-25T10:00:00Z");
        app.deliver(&format!("msg_{i}"), &event.to_string()).await;
    }
    let stop = CancellationToken::new();
    let extra = "[worker]\nconcurrency = 4\npoll_interval_ms = 100";
    let runs: Vec<_> = (0..2).map(|_| tokio::spawn(worker(&pool, &seam.url(), extra).0.run(stop.clone()))).collect();
    eventually("every code mirrored and the queue empty", || async {
        let pending = count(&pool, "access_code_refetches").await;
        let mirrored = count(&pool, "access_codes").await;
        if pending == 0 && mirrored == 30 { Ok(()) } else { Err(format!("{pending} pending, {mirrored} mirrored")) }
    })
    .await;
    stop.cancel();
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(seam.calls(), 30);
    let per_code = seam.calls_per_code();
    for i in 0..30 {
        assert_eq!(per_code.get(&format!("ac_{i}")), Some(&1), "ac_{i} fetched once: {per_code:?}");
    }
}

#[sqlx::test]
async fn a_running_worker_wakes_on_notify_and_stops_gracefully(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.answer(
        "ac_1",
        Answer::found(code_json("ac_1", "set", json!([]), json!([]))).after(Duration::from_millis(500)),
    );
    // Polling is an hour apart: only NOTIFY can wake it in time.
    let (worker, _) = worker(&pool, &seam.url(), "[worker]\npoll_interval_ms = 3600000");
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    eventually("the worker to LISTEN", || async {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if listening == 1 { Ok(()) } else { Err(format!("{listening} sessions listening")) }
    })
    .await;
    app.deliver("msg_1", &access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string())
        .await;
    eventually("Seam's first call", || async {
        match seam.calls() {
            1 => Ok(()),
            calls => Err(format!("{calls} calls")),
        }
    })
    .await;
    // Stop while the fetch is in flight: it is finished, not lost.
    stop.cancel();
    run.await.unwrap();
    assert_eq!(mirror_row(&pool, "ac_1").await.status.as_deref(), Some("set"));
    assert_eq!(count(&pool, "access_code_refetches").await, 0);
}

#[sqlx::test]
async fn one_claim_statement_claims_at_most_one_row_whatever_the_plan(pool: PgPool) {
    // Statistics as in production, where the queue is usually nearly empty: with them,
    // a joined `LIMIT 1 … SKIP LOCKED` subquery could be re-run per outer row.
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, &refetch("ac_first")).await.unwrap();
    sqlx::query("ANALYZE access_code_refetches").execute(&pool).await.unwrap();
    let ids: Vec<String> = (0..29).map(|i| format!("ac_{i:02}")).collect();
    for id in &ids {
        queue::enqueue(&mut conn, &refetch(id)).await.unwrap();
    }
    let claims =
        futures::future::join_all((0..8).map(|_| queue::claim_next(&pool, Duration::from_secs(60), &CLAIM_EVERYTHING)))
            .await;
    let returned = claims.into_iter().filter(|c| c.as_ref().unwrap().is_some()).count();
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM access_code_refetches WHERE claim_token IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(held, returned as i64, "every claimed row was handed to a worker");
    assert!(returned <= 8);
}

#[sqlx::test]
async fn an_answer_postgres_cannot_store_becomes_a_dead_letter_not_an_endless_retry(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let mut code = code_json("ac_1", "set", json!([]), json!([]));
    code["name"] = json!("Guest \u{0} 12");
    seam.answer("ac_1", Answer::found(code));
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;
    let done = worker.drain().await.unwrap();
    assert!(
        matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(Failure::DeadLetter), .. }]),
        "{done:?}"
    );
    let (_, dead, error, _) = queue_row(&pool, "ac_1").await.unwrap();
    assert!(dead.is_some());
    assert!(error.unwrap().contains("cannot be stored"));
}

#[sqlx::test]
async fn a_manual_refetch_keeps_the_event_a_pending_refetch_names(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.answer("ac_1", Answer::found(code_json("ac_1", "set", json!([]), json!([]))));
    let event = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:03Z");
    app.deliver("msg_1", &event.to_string()).await;
    // An operator's re-fetch (no event) lands on the pending row before the worker runs.
    seam_access_sync::store::admin::refetch(&pool, &["ac_1".to_owned()], CodeEndpoint::Managed).await.unwrap();
    let pending: Option<String> =
        sqlx::query_scalar("SELECT last_event_type FROM access_code_refetches WHERE access_code_id = 'ac_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending.as_deref(), Some("access_code.set_on_device"), "the queue row keeps its event");
    worker.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_1").await;
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.set_on_device"), "and so does the mirror");

    // A sweep or re-fetch of a mirrored code does not blank the event it names either.
    seam_access_sync::store::admin::refetch(&pool, &["ac_1".to_owned()], CodeEndpoint::Managed).await.unwrap();
    worker.drain().await.unwrap();
    let row = mirror_row(&pool, "ac_1").await;
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.set_on_device"));
    assert_eq!(history(&pool, "ac_1").await.len(), 1, "the re-fetch changed nothing");
}

#[sqlx::test]
async fn one_rule_decides_which_event_is_newer_in_rust_and_in_sql(pool: PgPool) {
    let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
    let event = |id: Option<&str>, occurred_at: Option<DateTime<Utc>>| EventRef {
        event_id: id.map(str::to_owned),
        event_type: id.map(|_| "access_code.changed".to_owned()),
        occurred_at,
    };
    let early = event(Some("e1"), at("2026-11-25T10:00:00Z"));
    let late = event(Some("e2"), at("2026-11-25T10:00:05Z"));
    let late_twin = event(Some("e3"), at("2026-11-25T10:00:05Z"));
    let untimed = event(Some("e4"), None);
    let none = EventRef::default();
    // (new, old, does new replace old?)
    let cases = [
        (&late, &early, true),
        (&early, &late, false),
        (&late_twin, &late, true),
        (&untimed, &early, false),
        (&early, &untimed, true),
        (&none, &early, false),
        (&none, &untimed, false),
        (&untimed, &none, true),
        (&early, &none, true),
        (&none, &none, true),
    ];
    for (new, old, expected) in cases {
        let in_rust = new.supersedes(old);
        let in_sql: bool = sqlx::query_scalar("SELECT event_supersedes($1, $2, $3, $4)")
            .bind(new.occurred_at)
            .bind(&new.event_id)
            .bind(old.occurred_at)
            .bind(&old.event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(in_rust, expected, "Rust: {new:?} over {old:?}");
        assert_eq!(in_sql, expected, "SQL: {new:?} over {old:?}");
    }
}

#[sqlx::test]
async fn an_unknown_endpoint_in_the_queue_is_an_error_not_a_default(pool: PgPool) {
    // The CHECK constraint keeps it out of the table, so read a literal.
    let read: Result<CodeEndpoint, _> = sqlx::query_scalar("SELECT 'managd'::text").fetch_one(&pool).await;
    assert!(read.is_err(), "{read:?}");
    let read: CodeEndpoint = sqlx::query_scalar("SELECT 'unmanaged'::text").fetch_one(&pool).await.unwrap();
    assert_eq!(read, CodeEndpoint::Unmanaged);
}
