//! Running it: change notifications, metrics, the CLI, retention.

use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use seam_access_sync::store::admin;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use test_kit::{Answer, StandIn};

use crate::helpers::*;

/// A managed code as Seam answers it (the kit's documented code) in this state.
pub(crate) fn seam_code(id: &str, status: &str, warnings: Value) -> Value {
    fixtures::with(fixtures::access_code(id), json!({ "status": status, "warnings": warnings }))
}

#[sqlx::test]
async fn a_change_is_notified_on_access_code_changed(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("access_code_changed").await.unwrap();

    seam.answer_next(Answer::found(seam_code("ac_1", "setting", json!([]))));
    seam.set_code("ac_1", seam_code("ac_1", "set", json!([fixtures::warning("delay_in_setting_on_device", "m")])));
    for (i, event_type) in
        ["access_code.created", "access_code.set_on_device", "access_code.changed"].iter().enumerate()
    {
        app.deliver(
            &format!("msg_{i}"),
            &access_code_event(event_type, "ac_1", &format!("2026-11-25T10:00:0{i}Z")).to_string(),
        )
        .await;
        worker.drain().await.unwrap();
    }

    let mut payloads = Vec::new();
    while let Ok(Ok(Some(notification))) = tokio::time::timeout(Duration::from_millis(500), listener.try_recv()).await {
        payloads.push(serde_json::from_str::<Value>(notification.payload()).unwrap());
    }
    assert_eq!(
        payloads,
        vec![
            json!({"access_code_id": "ac_1", "change": "created", "changes": [], "origin": "fetch",
                   "previous_status": null, "status": "setting",
                   "warnings": 0, "errors": 0, "event_type": "access_code.created"}),
            json!({"access_code_id": "ac_1", "change": "changed", "changes": ["status_changed", "warnings_changed"],
                   "origin": "fetch", "previous_status": "setting", "status": "set",
                   "warnings": 1, "errors": 0, "event_type": "access_code.set_on_device"}),
        ],
        "the third fetch changed nothing, so it is not notified"
    );
    // Each notification is its history row as the change stream tells it.
    let stream = seam_access_sync::store::changes::read_after(&pool, 0, 10).await.unwrap();
    let told: Vec<Value> = stream.records.iter().map(|record| record.notice.payload()).collect();
    assert_eq!(told, payloads);
}

/// The value of one sample line in the Prometheus text, 0 when absent.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[sqlx::test]
async fn metrics_count_deliveries_and_seam_calls(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", seam_code("ac_1", "set", json!([])));
    let app = spawn_app_with(pool.clone(), settings(&seam.url(), "[server]\nrun_mode = \"all\"")).await;
    let before = scrape(&app).await;
    assert_eq!(sample(&before, r#"seam_access_sync_webhook_deliveries_total{outcome="accepted"}"#), 0.0);
    assert!(before.contains("# TYPE seam_access_sync_refetches_pending gauge"));

    let body = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string();
    assert_eq!(app.deliver("msg_1", &body).await.status(), StatusCode::OK);
    assert_eq!(app.deliver("msg_1", &body).await.status(), StatusCode::OK);
    app.post_webhook(
        &[("svix-id", "x"), ("svix-timestamp", &NOW.to_string()), ("svix-signature", "v1,AAAA")],
        b"{}".to_vec(),
    )
    .await;
    eventually("ac_1 mirrored and the queue empty", || async {
        match (count(&pool, "access_codes").await, count(&pool, "access_code_refetches").await) {
            (1, 0) => Ok(()),
            (mirrored, pending) => Err(format!("{mirrored} mirrored, {pending} pending")),
        }
    })
    .await;
    // The worker records its metrics just after its commit: wait for that too.
    eventually("the worker's metrics after its commit", || async {
        let text = scrape(&app).await;
        match sample(&text, r#"seam_access_sync_mirror_writes_total{outcome="created"}"#) {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("mirror_writes_total{{outcome=\"created\"}} = {n}")),
        }
    })
    .await;

    let after = scrape(&app).await;
    assert_eq!(sample(&after, r#"seam_access_sync_webhook_deliveries_total{outcome="accepted"}"#), 1.0);
    assert_eq!(sample(&after, r#"seam_access_sync_webhook_deliveries_total{outcome="duplicate"}"#), 1.0);
    assert_eq!(sample(&after, r#"seam_access_sync_webhook_deliveries_total{outcome="invalid_signature"}"#), 1.0);
    assert_eq!(
        sample(
            &after,
            r#"seam_access_sync_seam_requests_total{endpoint="managed",outcome="found",status="200",workspace="SEAM_API_KEY"}"#
        ),
        1.0
    );
    assert_eq!(sample(&after, "seam_access_sync_mirror_lag_seconds_count"), 1.0);
    assert_eq!(sample(&after, r#"seam_access_sync_mirror_writes_total{outcome="created"}"#), 1.0);
    assert_eq!(sample(&after, "seam_access_sync_refetches_pending"), 0.0);
    assert!(sample(&after, "seam_access_sync_last_webhook_age_seconds") >= 0.0);
    assert!(
        sample(
            &after,
            r#"seam_access_sync_http_request_duration_seconds_count{method="POST",route="/webhooks/seam",status="200"}"#
        ) >= 2.0
    );
    assert!(!after.contains("ac_1"), "no ids in labels");
}

#[sqlx::test]
async fn queue_gauges_show_pending_and_dead_letters(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for i in 0..3 {
        let event = access_code_event("access_code.changed", &format!("ac_{i}"), "2026-11-25T10:00:00Z");
        app.deliver(&format!("msg_{i}"), &event.to_string()).await;
    }
    sqlx::query("UPDATE access_code_refetches SET dead_lettered_at = now() WHERE access_code_id = 'ac_0'")
        .execute(&pool)
        .await
        .unwrap();
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, "seam_access_sync_refetches_pending"), 2.0);
    assert_eq!(sample(&metrics, "seam_access_sync_dead_letters"), 1.0);
    assert!(sample(&metrics, "seam_access_sync_oldest_pending_refetch_age_seconds") >= 0.0);
}

/// Runs the real binary against the test's database.
pub(crate) fn cli(pool: &PgPool, args: &[&str]) -> Output {
    let url = test_kit::database_url(&pool.connect_options());
    std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("APP_LOG__FORMAT", "text")
        .env_remove("SEAM_API_KEY")
        .env_remove("SEAM_WEBHOOK_SECRET")
        .output()
        .expect("the binary runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[sqlx::test]
async fn the_cli_queues_lists_and_redrives(pool: PgPool) {
    let status = cli(&pool, &["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let json: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!((json["pending"].as_i64(), json["dead_letters"].as_i64()), (Some(0), Some(0)));
    assert!(json["last_webhook_at"].is_null());

    let queued = cli(&pool, &["refetch", "ac_1", "ac_2", "ac_u", "--unmanaged"]);
    assert!(queued.status.success(), "{queued:?}");
    assert_eq!(stdout(&queued).trim(), "queued 3 re-fetch(es)");
    let endpoints: Vec<(String, String)> =
        sqlx::query_as("SELECT access_code_id, endpoint FROM access_code_refetches ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(endpoints.len(), 3);
    assert!(endpoints.iter().all(|(_, e)| e == "unmanaged"));

    assert_eq!(stdout(&cli(&pool, &["dead-letters", "list"])).trim(), "no dead letters");
    sqlx::query(
        "UPDATE access_code_refetches SET dead_lettered_at = now(), last_error = 'HTTP 400: bad', attempts = 3",
    )
    .execute(&pool)
    .await
    .unwrap();
    let listed = stdout(&cli(&pool, &["dead-letters", "list"]));
    assert!(
        listed.contains("ac_1") && listed.contains("HTTP 400: bad") && listed.contains("3 dead letter(s)"),
        "{listed}"
    );
    let listed: Value = serde_json::from_str(&stdout(&cli(&pool, &["dead-letters", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);

    let one = cli(&pool, &["dead-letters", "redrive", "ac_1"]);
    assert!(one.status.success());
    assert_eq!(stdout(&one).trim(), "redrove 1 dead letter(s)");
    let unknown = cli(&pool, &["dead-letters", "redrive", "ac_1", "nope"]);
    assert_eq!(unknown.status.code(), Some(1), "ac_1 is no longer dead and nope never was");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not dead letters"));
    let all = cli(&pool, &["dead-letters", "redrive", "--all"]);
    assert_eq!(stdout(&all).trim(), "redrove 2 dead letter(s)");
    let text = stdout(&cli(&pool, &["status"]));
    assert!(text.contains("pending re-fetches  3") && text.contains("dead letters        0"), "{text}");
}

#[sqlx::test]
async fn the_cli_refuses_bad_usage_with_exit_code_2(pool: PgPool) {
    for args in
        [&["refetch"][..], &["dead-letters", "redrive"], &["dead-letters", "redrive", "a", "--all"], &["frobnicate"]]
    {
        let output = cli(&pool, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
    let blank = cli(&pool, &["refetch", " "]);
    assert_eq!(blank.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&blank.stderr).contains("not an access code id"));
}

#[sqlx::test]
async fn migrate_creates_and_migrates_a_database(pool: PgPool) {
    let options = pool.connect_options();
    let name = format!("sas_cli_migrate_{}", uuid::Uuid::new_v4().simple());
    let url = format!("postgres://postgres@{}:{}/{name}", options.get_host(), options.get_port());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let created = sqlx::PgPool::connect(&url).await.unwrap();
    assert_eq!(seam_access_sync::store::pending_migrations(&created).await.unwrap(), 0);
    created.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\""))).execute(&pool).await.unwrap();
}

#[sqlx::test]
async fn serve_refuses_to_start_without_its_secrets(pool: PgPool) {
    let output = cli(&pool, &["serve"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("SEAM_WEBHOOK_SECRET is missing"), "{stderr}");
}

#[sqlx::test]
async fn retention_prunes_only_old_events(pool: PgPool) {
    sqlx::query(
        "INSERT INTO seam_events (event_id, event_type, action, payload, received_at) VALUES
            ('old_1', 'device.connected', 'ignored', '{}', now() - interval '31 days'),
            ('old_2', 'access_code.changed', 'refetch', '{}', now() - interval '40 days'),
            ('recent', 'access_code.changed', 'refetch', '{}', now() - interval '29 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(admin::prune_events(&pool, 30).await.unwrap(), 2);
    let left: Vec<String> = sqlx::query_scalar("SELECT event_id FROM seam_events").fetch_all(&pool).await.unwrap();
    assert_eq!(left, vec!["recent"]);
}

#[sqlx::test]
async fn the_worker_process_prunes_on_its_own(pool: PgPool) {
    sqlx::query(
        "INSERT INTO seam_events (event_id, event_type, action, payload, received_at)
         VALUES ('old', 'device.connected', 'ignored', '{}', now() - interval '3 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let extra = "[server]\nrun_mode = \"all\"\n[retention]\nevents_days = 2";
    let _app = spawn_app_with(pool.clone(), settings("http://127.0.0.1:9", extra)).await;
    eventually("the old event pruned at start", || async {
        match count(&pool, "seam_events").await {
            0 => Ok(()),
            left => Err(format!("{left} events left")),
        }
    })
    .await;
}

#[sqlx::test]
async fn healthcheck_exits_0_only_when_the_service_is_ready(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    // The app runs on this test's runtime: wait for the binary off it.
    let url = format!("{}/readyz", app.address);
    let ready = tokio::task::spawn_blocking({
        let pool = pool.clone();
        move || cli(&pool, &["healthcheck", "--url", &url])
    })
    .await
    .unwrap();
    assert!(ready.status.success(), "{ready:?}");
    let closed = cli(&pool, &["healthcheck", "--url", "http://127.0.0.1:9/readyz"]);
    assert_eq!(closed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&closed.stderr).contains("did not answer"));
}

#[sqlx::test]
async fn reconcile_all_queues_every_code_that_still_exists(pool: PgPool) {
    sqlx::query(
        "INSERT INTO access_codes (access_code_id, status, is_managed, fetched_at, deleted_at) VALUES
            ('ac_1', 'set', true, now(), NULL), ('ac_u', 'set', false, now(), NULL),
            ('ac_gone', 'set', true, now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let output = cli(&pool, &["reconcile", "--all", "--rate", "1"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("queued 1/2") && text.contains("queued 2/2"), "progress shown: {text}");
    let queued: Vec<(String, String)> =
        sqlx::query_as("SELECT access_code_id, endpoint FROM access_code_refetches ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(queued, vec![("ac_1".into(), "managed".into()), ("ac_u".into(), "unmanaged".into())]);
    assert_eq!(cli(&pool, &["reconcile"]).status.code(), Some(2), "--all is required");
    let status: Value = serde_json::from_str(&stdout(&cli(&pool, &["status", "--json"]))).unwrap();
    assert!(status["workspaces"][0]["catch_up"]["last_success_at"].is_null(), "{status}");
}

#[sqlx::test]
async fn status_says_when_catch_up_stopped_at_its_page_cap(pool: PgPool) {
    let text = stdout(&cli(&pool, &["status"]));
    assert!(text.contains("catch-up            never ran"), "{text}");
    sqlx::query(
        "UPDATE catch_up_state SET last_run_at = now(), last_outcome = 'partial', last_events_found = 40000,
             last_events_new = 39000, high_water_mark = now() - interval '2 hours'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let text = stdout(&cli(&pool, &["status"]));
    assert!(text.contains("partial (page cap reached; the next run goes on)"), "{text}");
    assert!(text.contains("40000 event(s) found, 39000 new") && text.contains("caught up           never"), "{text}");
    let status: Value = serde_json::from_str(&stdout(&cli(&pool, &["status", "--json"]))).unwrap();
    assert_eq!(status["workspaces"][0]["catch_up"]["last_outcome"], "partial", "{status}");
    assert!(status["workspaces"][0]["catch_up"]["last_success_at"].is_null(), "{status}");
}
