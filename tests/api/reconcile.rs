//! Never miss a change: catch-up from Seam's event log and sweeps of the mirror.

use std::time::Duration;

use chrono::{DateTime, Utc};
use seam_access_sync::config::SweepSettings;
use seam_access_sync::jobs::catch_up::RunOutcome;
use seam_access_sync::jobs::sweep::{SweepReport, sweep_once};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::{Mode, StandIn};

use crate::helpers::*;

fn logged_event(event_type: &str, access_code_id: &str, created_at: DateTime<Utc>) -> Value {
    let at = created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut event = access_code_event(event_type, access_code_id, &at);
    event["created_at"] = json!(at);
    event
}

/// Seam with this event log (served as the live API serves it: events created in
/// the window, newest first, at most `limit`), where every code is set.
async fn seam_with_log(events: Vec<Value>) -> StandIn {
    let seam = StandIn::start().await.unwrap();
    seam.set_events(events);
    seam.answer_unknown_codes(fixtures::access_code);
    seam
}

#[sqlx::test]
async fn catch_up_finds_events_no_webhook_delivered_and_the_mirror_follows(pool: PgPool) {
    let now = Utc::now();
    let seam = seam_with_log(vec![
        logged_event("access_code.created", "ac_1", now - chrono::Duration::minutes(30)),
        logged_event("access_code.set_on_device", "ac_1", now - chrono::Duration::minutes(20)),
        logged_event("access_code.created", "ac_2", now - chrono::Duration::minutes(10)),
        json!({"event_id": "dev_ev", "event_type": "device.disconnected", "device_id": "d",
               "created_at": (now - chrono::Duration::minutes(5)).to_rfc3339()}),
    ])
    .await;
    let (catch_up, _) = catch_up(&pool, &seam.url(), "");

    let first = catch_up.run_once().await.unwrap();
    let RunOutcome::Completed { found, new, high_water_mark } = first else { panic!("{first:?}") };
    assert_eq!((found, new), (3, 3), "device events are not access-code events");
    assert!(high_water_mark.unwrap() > now - chrono::Duration::minutes(6));
    assert_eq!(count(&pool, "seam_events").await, 3);
    assert_eq!(count(&pool, "access_code_refetches").await, 2);

    let (worker, _) = worker(&pool, &seam.url(), "");
    worker.drain().await.unwrap();
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT access_code_id, status FROM access_codes ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, vec![("ac_1".into(), "set".into()), ("ac_2".into(), "set".into())]);

    // The next run sees the same events again (overlap) but nothing new.
    assert!(matches!(catch_up.run_once().await.unwrap(), RunOutcome::Completed { new: 0, .. }));
    assert_eq!(count(&pool, "access_code_refetches").await, 0);
}

#[sqlx::test]
async fn the_first_run_looks_back_a_day_and_later_runs_start_at_the_mark(pool: PgPool) {
    let now = Utc::now();
    let newest = now - chrono::Duration::minutes(10);
    let seam = seam_with_log(vec![
        logged_event("access_code.created", "ac_old", now - chrono::Duration::hours(30)),
        logged_event("access_code.created", "ac_1", newest),
    ])
    .await;
    let (catch_up, _) = catch_up(&pool, &seam.url(), "[catch_up]\noverlap_seconds = 300");
    catch_up.run_once().await.unwrap();
    catch_up.run_once().await.unwrap();
    let calls = seam.event_log_requests();
    let since = |i: usize| calls[i]["since"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let first_lookback = now - since(0);
    assert!((first_lookback - chrono::Duration::hours(24)).num_seconds().abs() < 60, "{first_lookback}");
    assert_eq!((since(1) - (newest - chrono::Duration::seconds(300))).num_milliseconds().abs() / 1000, 0);
    let ids: Vec<String> = sqlx::query_scalar("SELECT access_code_id FROM seam_events").fetch_all(&pool).await.unwrap();
    assert_eq!(ids, vec!["ac_1"], "not forever back");
}

#[sqlx::test]
async fn an_event_delivered_by_webhook_and_by_catch_up_is_processed_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let event = logged_event("access_code.set_on_device", "ac_1", Utc::now() - chrono::Duration::minutes(1));
    let seam = seam_with_log(vec![event.clone()]).await;
    assert!(app.deliver("msg_1", &event.to_string()).await.status().is_success());
    let (catch_up, _) = catch_up(&pool, &seam.url(), "");
    assert!(matches!(catch_up.run_once().await.unwrap(), RunOutcome::Completed { found: 1, new: 0, .. }));
    let (worker, _) = worker(&pool, &seam.url(), "");
    worker.drain().await.unwrap();
    assert_eq!(count(&pool, "seam_events").await, 1);
    let fetches = seam.calls_to("/access_codes/get");
    assert_eq!(fetches, 1);
}

#[sqlx::test]
async fn a_full_page_is_split_until_every_event_is_found(pool: PgPool) {
    let now = Utc::now();
    let events: Vec<Value> = (0..7)
        .map(|i| logged_event("access_code.changed", &format!("ac_{i}"), now - chrono::Duration::minutes(60 - i)))
        .collect();
    let seam = seam_with_log(events).await;
    let (catch_up, _) = catch_up(&pool, &seam.url(), "[catch_up]\npage_limit = 2");
    let outcome = catch_up.run_once().await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { new: 7, .. }), "{outcome:?}");
    assert!(seam.event_log_requests().len() > 3, "it took several pages");
}

#[sqlx::test]
async fn two_instances_running_catch_up_at_once_do_the_work_once(pool: PgPool) {
    let event = logged_event("access_code.created", "ac_1", Utc::now() - chrono::Duration::minutes(1));
    let seam = seam_with_log(vec![event]).await;
    // Slow: the two runs overlap.
    seam.set_mode(Mode::Slow(Duration::from_millis(500)));
    let (a, _) = catch_up(&pool, &seam.url(), "");
    let (b, _) = catch_up(&pool, &seam.url(), "");
    let (a, b) = tokio::join!(a.run_once(), b.run_once());
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, RunOutcome::Skipped));
    assert!(matches!(outcomes, [RunOutcome::Completed { new: 1, .. }, RunOutcome::Skipped]), "{outcomes:?}");
    assert_eq!(seam.event_log_requests().len(), 1);
    assert_eq!(count(&pool, "seam_events").await, 1);
}

#[sqlx::test]
async fn a_rejected_key_on_the_event_log_fails_the_run_and_shows(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_mode(Mode::Status(401));
    let (catch_up, key_status) = catch_up(&pool, &seam.url(), "");
    let error = catch_up.run_once().await.unwrap_err();
    assert!(error.to_string().contains("API key"), "{error}");
    assert!(key_status.rejection().is_some());
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM catch_up_state").fetch_one(&pool).await.unwrap();
    assert!(last_error.unwrap().contains("401"));
}

fn sweep_settings() -> SweepSettings {
    SweepSettings {
        interval_seconds: 60,
        stuck_after_seconds: 900,
        stuck_max_interval_seconds: 6 * 3600,
        time_bound_grace_seconds: 30,
    }
}

/// A mirror row as a past fetch left it; `times` are SQL expressions relative to
/// now(): fetched_at, status_changed_at, starts_at, ends_at.
async fn mirrored(pool: &PgPool, id: &str, status: &str, kind: &str, times: [&str; 4]) {
    let [fetched, changed, starts, ends] = times;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO access_codes (access_code_id, device_id, status, type, fetched_at, status_changed_at, starts_at,
                                   ends_at, last_event_type, last_event_occurred_at)
         VALUES ('{id}', 'device_1', '{status}', '{kind}', {fetched}, {changed}, {starts}, {ends},
                 'access_code.created', {changed})"
    )))
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn a_code_stuck_in_setting_is_refetched_with_backoff(pool: PgPool) {
    let ago = |t: &str| format!("now() - interval '{t}'");
    mirrored(&pool, "fresh", "setting", "ongoing", [&ago("5 minutes"), &ago("5 minutes"), "NULL", "NULL"]).await;
    mirrored(&pool, "stuck", "setting", "ongoing", [&ago("20 minutes"), &ago("20 minutes"), "NULL", "NULL"]).await;
    mirrored(&pool, "removing", "removing", "ongoing", [&ago("1 hour"), &ago("1 hour"), "NULL", "NULL"]).await;
    mirrored(&pool, "set", "set", "ongoing", [&ago("2 days"), &ago("2 days"), "NULL", "NULL"]).await;
    // Stuck for 10 h: next look after half of that (5 h) since the last fetch.
    mirrored(&pool, "long_stuck_recent", "setting", "ongoing", [&ago("1 hour"), &ago("10 hours"), "NULL", "NULL"])
        .await;
    mirrored(&pool, "long_stuck_due", "unknown", "ongoing", [&ago("6 hours"), &ago("10 hours"), "NULL", "NULL"]).await;

    let report = sweep_once(&pool, &sweep_settings()).await.unwrap();
    assert_eq!(report, SweepReport { stuck: 3, time_bound: 0 });
    let queued: Vec<String> = sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, vec!["long_stuck_due", "removing", "stuck"]);
    assert_eq!(sweep_once(&pool, &sweep_settings()).await.unwrap(), SweepReport::default(), "already queued");
}

#[sqlx::test]
async fn a_stuck_code_ends_set_when_seam_says_so_without_any_event(pool: PgPool) {
    mirrored(
        &pool,
        "ac_1",
        "setting",
        "ongoing",
        ["now() - interval '1 hour'", "now() - interval '1 hour'", "NULL", "NULL"],
    )
    .await;
    let seam = seam_with_log(vec![]).await;
    sweep_once(&pool, &sweep_settings()).await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    worker.drain().await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM access_codes").fetch_one(&pool).await.unwrap();
    assert_eq!(status, "set");
    let history: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT change, event_type FROM access_code_history").fetch_all(&pool).await.unwrap();
    assert_eq!(history, vec![("changed".into(), None)], "no event behind it, though the row names its last event");
    let last: String = sqlx::query_scalar("SELECT last_event_type FROM access_codes").fetch_one(&pool).await.unwrap();
    assert_eq!(last, "access_code.created");
}

#[sqlx::test]
async fn time_bound_codes_are_refetched_after_they_start_and_end(pool: PgPool) {
    let ago = |t: &str| format!("now() - interval '{t}'");
    let ahead = |t: &str| format!("now() + interval '{t}'");
    // Started 5 min ago, last fetched before it started: due.
    mirrored(
        &pool,
        "started",
        "unset",
        "time_bound",
        [&ago("10 minutes"), &ago("1 day"), &ago("5 minutes"), &ahead("1 day")],
    )
    .await;
    // Started 10 s ago: within the grace, not yet.
    mirrored(
        &pool,
        "starting",
        "unset",
        "time_bound",
        [&ago("1 hour"), &ago("1 day"), &ago("10 seconds"), &ahead("1 day")],
    )
    .await;
    // Fetched after its start (plus grace): nothing to do.
    mirrored(
        &pool,
        "running",
        "set",
        "time_bound",
        [&ago("1 minute"), &ago("1 day"), &ago("5 minutes"), &ahead("1 day")],
    )
    .await;
    // Ended 2 min ago, last fetched while running: due.
    mirrored(&pool, "ended", "set", "time_bound", [&ago("1 hour"), &ago("1 day"), &ago("2 days"), &ago("2 minutes")])
        .await;
    let report = sweep_once(&pool, &sweep_settings()).await.unwrap();
    assert_eq!(report, SweepReport { stuck: 0, time_bound: 2 });
    let queued: Vec<String> = sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, vec!["ended", "started"]);
}
