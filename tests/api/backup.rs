//! Backup access codes: a pulled backup is mirrored and linked both ways; with
//! `backup.pull_on_failure` the service pulls one, exactly once, for a time-bound
//! code that fails to program; each of Seam's answers to the pull.

use std::sync::Arc;
use std::time::Duration;

use seam_access_sync::jobs::backup::{BackupPuller, PullResult, PullStep};
use seam_access_sync::seam::SeamClient;
use seam_access_sync::seam::workspaces::Workspaces;
use seam_access_sync::telemetry::metrics::Metrics;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use test_kit::StandIn;
use test_kit::seam::{Answer, Mode};

use crate::helpers::*;

const PULL: &str = "/access_codes/pull_backup_access_code";
const TOKEN: &str = "read-token-1-0123456789abcdef0123456789";
const ON: &str = "[backup]\npull_on_failure = true\npull_after_seconds = 300";

/// A time-bound code on a device with a backup pool, started an hour ago; `fields` on top.
fn time_bound(id: &str, fields: Value) -> Value {
    fixtures::with(
        fixtures::with(
            fixtures::access_code(id),
            json!({"type": "time_bound", "starts_at": "2020-01-01T10:00:00.000Z", "ends_at": "2099-01-01T10:00:00.000Z",
                   "status": "setting", "is_backup_access_code_available": true}),
        ),
        fields,
    )
}

fn failed_to_set() -> Value {
    json!({"errors": [fixtures::error("failed_to_set_on_device", "Failed to set code on device")]})
}

fn puller(pool: &PgPool, seam_url: &str, extra: &str) -> BackupPuller {
    let settings = settings(seam_url, extra);
    let seam = SeamClient::new(&settings.seam).unwrap();
    let workspaces = Workspaces::single(seam, Default::default());
    let metrics = Arc::new(Metrics::new());
    BackupPuller::new(pool.clone(), workspaces, settings.worker, settings.backup, settings.store_pins, metrics)
}

/// Delivers `event_type` for `id` and drains the worker.
async fn mirror(app: &TestApp, pool: &PgPool, seam: &StandIn, id: &str, event_type: &str) {
    let event = access_code_event(event_type, id, "2026-11-25T10:00:00.000Z");
    assert_eq!(app.deliver(&uuid::Uuid::new_v4().to_string(), &event.to_string()).await.status(), 200);
    worker(pool, &seam.url(), "").0.drain().await.unwrap();
}

async fn pull_row(pool: &PgPool, id: &str) -> Option<(String, i32, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT state, attempts, backup_access_code_id, last_error FROM backup_pulls WHERE access_code_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn link(pool: &PgPool, id: &str) -> (Option<String>, Option<String>, Option<bool>) {
    sqlx::query_as(
        "SELECT pulled_backup_access_code_id, backup_of_access_code_id, is_backup FROM access_codes WHERE access_code_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn history_changes(pool: &PgPool, id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT unnest(changes) FROM access_code_history WHERE access_code_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_backup_pulled_event_mirrors_the_backup_linked_both_ways_and_says_so(pool: PgPool) {
    let tokens = format!("[api]\ntokens = \"{TOKEN}\"");
    let app = spawn_app_with(pool.clone(), settings_with("http://127.0.0.1:9", &[&tokens])).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", time_bound("ac_1", json!({})));
    mirror(&app, &pool, &seam, "ac_1", "access_code.created").await;

    // Seam pulls a backup (someone called pull_backup_access_code) and says so.
    seam.set_code("ac_1", time_bound("ac_1", json!({"pulled_backup_access_code_id": "ac_1_bk"})));
    seam.set_code("ac_1_bk", time_bound("ac_1_bk", json!({"is_backup": true, "status": "set", "code": "7391"})));
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("access_code_changed").await.unwrap();
    let mut event = access_code_event("access_code.backup_access_code_pulled", "ac_1", "2026-11-25T11:00:00.000Z");
    event["backup_access_code_id"] = "ac_1_bk".into();
    assert_eq!(app.deliver("pulled_1", &event.to_string()).await.status(), 200);
    let queued: Vec<String> = sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, ["ac_1", "ac_1_bk"], "the event asks for the backup too");
    worker(&pool, &seam.url(), "").0.drain().await.unwrap();

    assert_eq!(link(&pool, "ac_1").await, (Some("ac_1_bk".into()), None, Some(false)));
    assert_eq!(link(&pool, "ac_1_bk").await, (None, Some("ac_1".into()), Some(true)));
    assert_eq!(history_changes(&pool, "ac_1").await, ["backup_pulled"]);
    let mut payloads = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        payloads.push(serde_json::from_str::<Value>(n.payload()).unwrap());
    }
    let original = payloads.iter().find(|p| p["access_code_id"] == "ac_1").expect("a notification for ac_1");
    assert_eq!(original["changes"], json!(["backup_pulled"]));
    assert_eq!(original["backup_access_code_id"], "ac_1_bk", "{payloads:?}");
    assert!(payloads.iter().any(|p| p["access_code_id"] == "ac_1_bk" && p["change"] == "created"), "{payloads:?}");
    // No PIN in any notification.
    assert!(!payloads.iter().any(|p| p.to_string().contains("7391")));

    let detail: Value = app
        .http
        .get(format!("{}/v1/access_codes/ac_1", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["pulled_backup_access_code_id"], "ac_1_bk");
    assert_eq!(detail["backup_access_code"]["access_code_id"], "ac_1_bk");
    assert_eq!(detail["backup_access_code"]["mirrored"], true);
    assert_eq!(detail["backup_access_code"]["status"], "set");
    assert!(detail["backup_access_code"].get("code").is_none(), "no PIN without store_pins");
    assert_eq!(detail["backup_pull"], Value::Null, "the service did not pull it");
    let backup: Value = app
        .http
        .get(format!("{}/v1/access_codes/ac_1_bk", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(backup["backup_of_access_code_id"], "ac_1");
    assert_eq!(backup["is_backup"], true);
}

#[sqlx::test]
async fn a_fetched_code_naming_a_backup_the_mirror_lacks_has_it_fetched(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", time_bound("ac_1", json!({"pulled_backup_access_code_id": "ac_1_bk"})));
    seam.set_code("ac_1_bk", time_bound("ac_1_bk", json!({"is_backup": true, "status": "set"})));
    // The backup first would be linked as well; here the original comes first, alone.
    mirror(&app, &pool, &seam, "ac_1", "access_code.created").await;
    assert_eq!(link(&pool, "ac_1_bk").await, (None, Some("ac_1".into()), Some(true)));
    assert_eq!(seam.calls_per_code().get("ac_1_bk"), Some(&1));
    // Fetching the original again fetches the backup no more.
    seam.reset_counts();
    mirror(&app, &pool, &seam, "ac_1", "access_code.changed").await;
    assert_eq!(seam.calls_per_code().get("ac_1_bk"), None);
}

#[sqlx::test]
async fn a_code_that_fails_to_set_gets_one_backup_pulled_mirrored_and_linked(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", time_bound("ac_1", failed_to_set()));
    mirror(&app, &pool, &seam, "ac_1", "access_code.failed_to_set_on_device").await;

    let steps = puller(&pool, &seam.url(), ON).drain().await.unwrap();
    assert!(matches!(&steps[..], [PullStep::Done { result: PullResult::Pulled(_), .. }]), "{steps:?}");
    assert_eq!(seam.calls_to(PULL), 1);
    assert_eq!(pull_row(&pool, "ac_1").await, Some(("pulled".into(), 1, Some("ac_1_backup".into()), None)));
    // The backup is mirrored from the answer and linked to its original at once.
    assert_eq!(link(&pool, "ac_1_backup").await, (None, Some("ac_1".into()), Some(true)), "before any re-fetch");
    // The original is fetched again.
    worker(&pool, &seam.url(), "").0.drain().await.unwrap();
    assert_eq!(link(&pool, "ac_1").await.0.as_deref(), Some("ac_1_backup"));
    assert_eq!(link(&pool, "ac_1_backup").await, (None, Some("ac_1".into()), Some(true)));
    assert!(history_changes(&pool, "ac_1").await.contains(&"backup_pulled".to_owned()));

    // Never twice: the decision stands, whatever the code does next.
    assert!(puller(&pool, &seam.url(), ON).drain().await.unwrap().is_empty());
    assert_eq!(seam.calls_to(PULL), 1);
}

#[sqlx::test]
async fn two_workers_pull_for_a_code_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    for id in ["ac_1", "ac_2", "ac_3"] {
        seam.set_code(id, time_bound(id, failed_to_set()));
        mirror(&app, &pool, &seam, id, "access_code.failed_to_set_on_device").await;
    }
    // Slow answers, so that both workers are at work at once.
    seam.reset_counts();
    seam.set_mode(Mode::Slow(Duration::from_millis(300)));
    let (one, two) = (puller(&pool, &seam.url(), ON), puller(&pool, &seam.url(), ON));
    let (a, b) = tokio::join!(one.drain(), two.drain());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 3, "{a:?} {b:?}");
    assert!(!a.is_empty() && !b.is_empty(), "both worked: {a:?} {b:?}");
    assert_eq!(seam.calls_to(PULL), 3);
    for id in ["ac_1", "ac_2", "ac_3"] {
        assert_eq!(seam.calls_per_code().get(id), Some(&1), "{id} pulled for once");
        assert_eq!(pull_row(&pool, id).await.unwrap().0, "pulled");
    }
}

#[sqlx::test]
async fn a_claimed_pull_is_not_taken_by_another_worker_until_its_lease_expires(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", time_bound("ac_1", failed_to_set()));
    mirror(&app, &pool, &seam, "ac_1", "access_code.failed_to_set_on_device").await;
    // The first worker dies right after recording `sending` and making the call
    // (its answer lost): Seam pulled the backup.
    let first = puller(&pool, &seam.url(), ON);
    first.decide().await.unwrap();
    seam.answer_pull_next(Answer::status(500), true);
    let step = first.try_pull_next(None).await.unwrap();
    assert!(matches!(step, PullStep::Done { result: PullResult::Retry { .. }, .. }), "{step:?}");
    assert_eq!(pull_row(&pool, "ac_1").await.unwrap().0, "sending");
    // Another worker, once the retry is due, looks before calling: no second pull.
    make_pulls_due(&pool).await;
    let second = puller(&pool, &seam.url(), ON);
    let step = second.try_pull_next(None).await.unwrap();
    assert_eq!(
        step,
        PullStep::Done {
            access_code_id: "ac_1".into(),
            result: PullResult::Recovered { backup_access_code_id: "ac_1_backup".into() }
        }
    );
    assert_eq!(seam.calls_to(PULL), 1, "never pulled twice");
    assert_eq!(pull_row(&pool, "ac_1").await.unwrap().0, "pulled");
    // And a claim held (a worker mid-call) is skipped by the others.
    sqlx::query("UPDATE backup_pulls SET state = 'decided', claim_token = gen_random_uuid(), claimed_until = now() + interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(second.try_pull_next(None).await.unwrap(), PullStep::Idle);
}

async fn make_pulls_due(pool: &PgPool) {
    sqlx::query("UPDATE backup_pulls SET next_attempt_at = now()").execute(pool).await.unwrap();
}

/// One failing code, one pull with `answer` first; what the pull row says after.
async fn pull_answered(
    pool: &PgPool,
    answer: Answer,
) -> (TestApp, StandIn, PullStep, (String, i32, Option<String>, Option<String>)) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.send_request_id(Some("req_pull_1"));
    seam.set_code("ac_1", time_bound("ac_1", failed_to_set()));
    mirror(&app, pool, &seam, "ac_1", "access_code.failed_to_set_on_device").await;
    seam.answer_pull_next(answer, false);
    let puller = puller(pool, &seam.url(), ON);
    puller.decide().await.unwrap();
    let step = puller.try_pull_next(None).await.unwrap();
    let row = pull_row(pool, "ac_1").await.unwrap();
    (app, seam, step, row)
}

#[sqlx::test]
async fn a_400_fails_the_pull_for_good_with_seams_reason(pool: PgPool) {
    let error = json!({"error": {"type": "no_backup_access_code_available", "message": "No backup access code available"}, "ok": false});
    let (_app, seam, step, row) = pull_answered(&pool, Answer::json(400, error)).await;
    assert!(matches!(step, PullStep::Done { result: PullResult::Failed { .. }, .. }), "{step:?}");
    assert_eq!(row.0, "failed");
    assert_eq!(
        row.3.as_deref(),
        Some(
            "HTTP 400: no_backup_access_code_available: No backup access code available (seam-request-id: req_pull_1)"
        )
    );
    make_pulls_due(&pool).await;
    assert!(puller(&pool, &seam.url(), ON).drain().await.unwrap().is_empty(), "never retried");
    assert_eq!(seam.calls_to(PULL), 1);
    let status = seam_access_sync::store::backup::status(&pool, 300).await.unwrap();
    assert_eq!(status.failed.len(), 1);
    assert_eq!(status.failed[0].access_code_id, "ac_1");
}

#[sqlx::test]
async fn a_404_fails_the_pull_for_good(pool: PgPool) {
    let error = json!({"error": {"type": "access_code_not_found", "message": "Access code not found"}, "ok": false});
    let (_app, seam, step, row) = pull_answered(&pool, Answer::json(404, error)).await;
    assert!(matches!(step, PullStep::Done { result: PullResult::Failed { .. }, .. }), "{step:?}");
    assert_eq!(row.0, "failed");
    assert!(row.3.unwrap().starts_with("HTTP 404: access_code_not_found"));
    make_pulls_due(&pool).await;
    assert!(puller(&pool, &seam.url(), ON).drain().await.unwrap().is_empty());
    assert_eq!(seam.calls_to(PULL), 1);
}

#[sqlx::test]
async fn a_429_is_retried_after_retry_after_then_pulled_once(pool: PgPool) {
    let (_app, seam, step, row) = pull_answered(&pool, Answer::status(429).header("retry-after", "7")).await;
    let PullStep::Done { result: PullResult::Retry { delay, .. }, .. } = step else { panic!("{step:?}") };
    assert_eq!(delay, Duration::from_secs(7));
    assert_eq!(row.0, "sending");
    make_pulls_due(&pool).await;
    let steps = puller(&pool, &seam.url(), ON).drain().await.unwrap();
    assert!(matches!(&steps[..], [PullStep::Done { result: PullResult::Pulled(_), .. }]), "{steps:?}");
    assert_eq!(seam.calls_to(PULL), 2, "the refused call, then the one that pulled");
    assert_eq!(seam.calls_to("/access_codes/get"), 2, "the mirror's fetch, then the look before calling again");
    assert_eq!(pull_row(&pool, "ac_1").await.unwrap().0, "pulled");
}

#[sqlx::test]
async fn a_500_that_pulled_is_resolved_without_a_second_call(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", time_bound("ac_1", failed_to_set()));
    mirror(&app, &pool, &seam, "ac_1", "access_code.failed_to_set_on_device").await;
    seam.answer_pull_next(Answer::status(500), true);
    let puller = puller(&pool, &seam.url(), ON);
    let first = puller.drain().await.unwrap();
    assert!(matches!(&first[..], [PullStep::Done { result: PullResult::Retry { .. }, .. }]), "{first:?}");
    make_pulls_due(&pool).await;
    let steps = puller.drain().await.unwrap();
    assert!(matches!(&steps[..], [PullStep::Done { result: PullResult::Recovered { .. }, .. }]), "{steps:?}");
    assert_eq!(seam.calls_to(PULL), 1);
    worker(&pool, &seam.url(), "").0.drain().await.unwrap();
    assert_eq!(link(&pool, "ac_1_backup").await.1.as_deref(), Some("ac_1"));
}

#[sqlx::test]
async fn a_500_that_did_not_pull_is_called_again(pool: PgPool) {
    let (_app, seam, step, row) = pull_answered(&pool, Answer::status(500)).await;
    assert!(matches!(step, PullStep::Done { result: PullResult::Retry { .. }, .. }), "{step:?}");
    assert_eq!((row.0.as_str(), row.1), ("sending", 1));
    make_pulls_due(&pool).await;
    let steps = puller(&pool, &seam.url(), ON).drain().await.unwrap();
    assert!(matches!(&steps[..], [PullStep::Done { result: PullResult::Pulled(_), .. }]), "{steps:?}");
    assert_eq!(seam.calls_to(PULL), 2);
}

#[sqlx::test]
async fn nothing_is_pulled_when_off_for_ongoing_codes_or_without_a_backup_pool(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_tb", time_bound("ac_tb", failed_to_set()));
    seam.set_code("ac_ongoing", fixtures::with(time_bound("ac_ongoing", failed_to_set()), json!({"type": "ongoing"})));
    seam.set_code(
        "ac_nopool",
        time_bound("ac_nopool", fixtures::with(failed_to_set(), json!({"is_backup_access_code_available": false}))),
    );
    seam.set_code("ac_late", time_bound("ac_late", json!({"status": "unset"})));
    seam.set_code("ac_set", time_bound("ac_set", json!({"status": "set"})));
    for id in ["ac_tb", "ac_ongoing", "ac_nopool", "ac_late", "ac_set"] {
        mirror(&app, &pool, &seam, id, "access_code.created").await;
    }
    assert!(puller(&pool, &seam.url(), "").drain().await.unwrap().is_empty(), "off by default");
    assert_eq!(seam.calls_to(PULL), 0);
    let steps = puller(&pool, &seam.url(), ON).drain().await.unwrap();
    let mut pulled: Vec<&str> = steps
        .iter()
        .map(|s| match s {
            PullStep::Done { access_code_id, .. } => access_code_id.as_str(),
            PullStep::Idle => "",
        })
        .collect();
    pulled.sort();
    assert_eq!(pulled, ["ac_late", "ac_tb"], "the failed one and the one not set 300 s after its start");
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT access_code_id, reason FROM backup_pulls ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(
        reasons,
        [("ac_late".into(), "not_set_after_start".into()), ("ac_tb".into(), "failed_to_set_on_device".into())]
    );
    let status = seam_access_sync::store::backup::status(&pool, 300).await.unwrap();
    assert_eq!((status.left_alone_not_time_bound, status.left_alone_no_backup_available), (1, 1));
    assert_eq!(status.pulled, 2);
}

/// `seam-access-sync pull-backup` (the real binary) against the test's database and `seam`.
fn pull_backup_cli(pool: &PgPool, seam: &StandIn, id: &str, store_pins: bool) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
        .args(["pull-backup", id])
        .env("DATABASE_URL", test_kit::database_url(&pool.connect_options()))
        .env("SEAM_API_URL", seam.url())
        .env("SEAM_API_KEY", API_KEY)
        .env("APP_STORE_PINS", store_pins.to_string())
        .env("APP_LOG__FORMAT", "text")
        .env_remove("SEAM_WEBHOOK_SECRET")
        .output()
        .expect("the binary runs")
}

#[sqlx::test]
async fn the_pull_backup_cli_prints_the_backup_once_and_refuses_an_ongoing_code(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.set_code("ac_1", time_bound("ac_1", json!({})));
    seam.set_code("ac_2", time_bound("ac_2", json!({})));
    seam.set_code("ac_ongoing", fixtures::with(time_bound("ac_ongoing", json!({})), json!({"type": "ongoing"})));
    for id in ["ac_1", "ac_2", "ac_ongoing"] {
        mirror(&app, &pool, &seam, id, "access_code.created").await;
    }

    // The backup's id, and no PIN without store_pins.
    let output = pull_backup_cli(&pool, &seam, "ac_1", false);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(printed.trim(), "backup access code ac_1_backup", "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("7391"), "no PIN in the log either");
    assert_eq!(seam.calls_to(PULL), 1);
    assert_eq!(pull_row(&pool, "ac_1").await, Some(("pulled".into(), 1, Some("ac_1_backup".into()), None)));
    assert_eq!(link(&pool, "ac_1_backup").await, (None, Some("ac_1".into()), Some(true)), "mirrored, linked");

    // Again: the pull it made before, no second call.
    let again = pull_backup_cli(&pool, &seam, "ac_1", false);
    assert!(again.status.success(), "{again:?}");
    let printed = String::from_utf8_lossy(&again.stdout);
    assert_eq!(printed.trim(), "a backup was pulled for ac_1 before: backup access code ac_1_backup");
    assert_eq!(seam.calls_to(PULL), 1, "not pulled again");

    // With store_pins, the PIN too.
    let output = pull_backup_cli(&pool, &seam, "ac_2", true);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "backup access code ac_2_backup\nPIN 7391");
    assert_eq!(seam.calls_to(PULL), 2);

    // An ongoing code: refused with the reason, exit code non-zero, no call.
    let refused = pull_backup_cli(&pool, &seam, "ac_ongoing", false);
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not pulled: ac_ongoing is not time_bound (type ongoing)"), "{said}");
    assert!(String::from_utf8_lossy(&refused.stdout).trim().is_empty(), "{refused:?}");
    assert_eq!(seam.calls_to(PULL), 2, "no call for an ongoing code");
    assert_eq!(pull_row(&pool, "ac_ongoing").await, None);
}
