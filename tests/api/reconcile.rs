//! Never miss a change: catch-up from Seam's event log and sweeps of the mirror.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use seam_access_sync::config::SweepSettings;
use seam_access_sync::jobs::catch_up::{CatchUp, MAX_PAGES, RunOutcome};
use seam_access_sync::jobs::sweep::{SweepReport, sweep_once};
use seam_access_sync::seam::event::{
    CONNECTED_ACCOUNT_EVENT_TYPES, DEVICE_EVENT_TYPES, LISTED_ACCESS_CODE_EVENT_TYPES, listed_event_types,
};
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
        json!({"event_id": "lock_ev", "event_type": "lock.locked", "device_id": "d",
               "created_at": (now - chrono::Duration::minutes(4)).to_rfc3339()}),
    ])
    .await;
    let (catch_up, _) = catch_up(&pool, &seam.url(), "");

    let first = catch_up.run_workspace(0).await.unwrap();
    let RunOutcome::Completed { found, new, high_water_mark } = first else { panic!("{first:?}") };
    assert_eq!((found, new), (4, 4), "the device event acts too; the lock event was not asked for");
    assert!(high_water_mark.unwrap() >= now, "the log is read up to the run's start");
    assert_eq!(count(&pool, "seam_events").await, 4);
    assert_eq!(count(&pool, "access_code_refetches").await, 2, "device d has no mirrored codes");
    for request in seam.event_log_requests() {
        assert_eq!(request["event_types"], json!(listed_event_types()), "only the types the service acts on");
    }

    let (worker, _) = worker(&pool, &seam.url(), "");
    worker.drain().await.unwrap();
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT access_code_id, status FROM access_codes ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, vec![("ac_1".into(), "set".into()), ("ac_2".into(), "set".into())]);

    // The next run sees the same events again (overlap) but nothing new.
    assert!(matches!(catch_up.run_workspace(0).await.unwrap(), RunOutcome::Completed { new: 0, .. }));
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
    let RunOutcome::Completed { high_water_mark: Some(mark), .. } = catch_up.run_workspace(0).await.unwrap() else {
        panic!("the first run completes")
    };
    assert!(mark > newest);
    catch_up.run_workspace(0).await.unwrap();
    let calls = seam.event_log_requests();
    assert_eq!(calls.len(), 2, "one window each: {calls:?}");
    let since = |i: usize| calls[i]["between"][0].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let first_lookback = now - since(0);
    assert!((first_lookback - chrono::Duration::hours(24)).num_seconds().abs() < 60, "{first_lookback}");
    assert_eq!(since(1), mark - chrono::Duration::seconds(300) - chrono::Duration::milliseconds(1));
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
    assert!(matches!(catch_up.run_workspace(0).await.unwrap(), RunOutcome::Completed { found: 1, new: 0, .. }));
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
    let outcome = catch_up.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { new: 7, .. }), "{outcome:?}");
    assert!(seam.event_log_requests().len() > 3, "it took several pages");
}

/// A busy workspace's log: `n` events over the day before `end` (inside the first
/// run's lookback), from a fixed seed. Four in ten are `access_code.*` events, one in
/// five the `device.*` and `connected_account.*` events the service acts on, the rest
/// families it does not ask for (`lock.*`, battery, …); a tenth come in bursts of a
/// few seconds, where several share a millisecond.
fn busy_log(n: usize, end: DateTime<Utc>) -> Vec<Value> {
    let mut seed: u64 = 0x5eed_1234_abcd_ef01;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let unlisted = [
        "lock.locked",
        "lock.unlocked",
        "device.low_battery",
        "device.battery_status_changed",
        "connected_account.created",
    ];
    let start = end - chrono::Duration::hours(23) - chrono::Duration::minutes(50);
    let day_ms = (end - start).num_milliseconds() as u64;
    let bursts: Vec<u64> = (0..5).map(|_| next(day_ms - 10_000)).collect();
    (0..n)
        .map(|i| {
            let offset = if next(10) == 0 { bursts[next(5) as usize] + next(4_000) } else { next(day_ms) };
            let at = (start + chrono::Duration::milliseconds(offset as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let event_type = match next(100) {
                0..40 => LISTED_ACCESS_CODE_EVENT_TYPES[next(21) as usize],
                40..55 => DEVICE_EVENT_TYPES[next(DEVICE_EVENT_TYPES.len() as u64) as usize],
                55..60 => CONNECTED_ACCOUNT_EVENT_TYPES[next(CONNECTED_ACCOUNT_EVENT_TYPES.len() as u64) as usize],
                _ => unlisted[next(unlisted.len() as u64) as usize],
            };
            let mut event = json!({
                "event_id": format!("ev_{i:06}"), "event_type": event_type, "workspace_id": "ws_1",
                "device_id": format!("device_{}", next(300)), "connected_account_id": format!("ca_{}", next(20)),
                "created_at": at, "occurred_at": at,
            });
            if event_type.starts_with("access_code.") {
                event["access_code_id"] = json!(format!("ac_{}", next(5_000)));
            }
            event
        })
        .collect()
}

/// The ids of `log`'s events whose type is one of `types`.
fn ids_of(log: &[Value], types: &[&str]) -> BTreeSet<String> {
    log.iter()
        .filter(|e| types.contains(&e["event_type"].as_str().unwrap()))
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn stored_ids(pool: &PgPool, like: &str) -> BTreeSet<String> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM seam_events WHERE event_type LIKE $1")
        .bind(like)
        .fetch_all(pool)
        .await
        .unwrap();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "each event stored once");
    unique
}

/// Runs catch-up until a run completes; every run must move the mark. Returns the
/// number of runs and the `/events/list` calls each made.
async fn run_until_caught_up(pool: &PgPool, catch_up: &CatchUp, seam: &StandIn) -> (usize, Vec<usize>) {
    let mut mark: Option<DateTime<Utc>> = None;
    let mut calls = Vec::new();
    for run in 1..=50 {
        let before = seam.event_log_requests().len();
        let outcome = catch_up.run_workspace(0).await.unwrap();
        calls.push(seam.event_log_requests().len() - before);
        let (moved_to, done) = match outcome {
            RunOutcome::Completed { high_water_mark, .. } => (high_water_mark, true),
            RunOutcome::Partial { high_water_mark, .. } => (high_water_mark, false),
            RunOutcome::Skipped => panic!("nobody else runs catch-up here"),
        };
        assert!(moved_to > mark, "run {run} moved the mark: {mark:?} -> {moved_to:?}");
        let (saved, last_outcome): (Option<DateTime<Utc>>, String) =
            sqlx::query_as("SELECT high_water_mark, last_outcome FROM catch_up_state").fetch_one(pool).await.unwrap();
        assert_eq!(saved, moved_to, "the mark is saved");
        assert_eq!(last_outcome, if done { "completed" } else { "partial" });
        mark = moved_to;
        if done {
            return (run, calls);
        }
        assert_eq!(calls[run - 1], MAX_PAGES, "only the page cap ends a run early");
    }
    panic!("catch-up never caught up: {calls:?}")
}

#[sqlx::test]
async fn a_busy_log_of_60000_events_is_read_whole_window_by_window(pool: PgPool) {
    let log = busy_log(60_000, Utc::now() - chrono::Duration::minutes(1));
    let access_code_ids = ids_of(&log, LISTED_ACCESS_CODE_EVENT_TYPES);
    let listed_ids = ids_of(&log, &listed_event_types());
    let seam = seam_with_log(log).await;
    let (catch_up, _) = catch_up(&pool, &seam.url(), "");

    let started = std::time::Instant::now();
    let (runs, calls) = run_until_caught_up(&pool, &catch_up, &seam).await;
    let elapsed = started.elapsed();

    assert_eq!(stored_ids(&pool, "access_code.%").await, access_code_ids, "every access_code event, once");
    assert_eq!(stored_ids(&pool, "%").await, listed_ids, "and the device and account events; nothing else");
    for request in seam.event_log_requests() {
        assert_eq!(request["event_types"], json!(listed_event_types()), "never a type outside the published enum");
        assert_eq!(request["limit"], 500);
    }
    let total: usize = calls.iter().sum();
    println!(
        "catch-up of a 60000-event day ({} listed, {} access_code): {total} /events/list calls {calls:?}, \
         {runs} run(s), {} events stored, {:.1} s",
        listed_ids.len(),
        access_code_ids.len(),
        count(&pool, "seam_events").await,
        elapsed.as_secs_f64()
    );

    // The next run reads from the mark (less the overlap): nothing new, and the mark moves on.
    let before = seam.event_log_requests().len();
    let outcome = catch_up.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { new: 0, .. }), "{outcome:?}");
    assert_eq!(seam.event_log_requests().len() - before, 1, "one short window");
}

#[sqlx::test]
async fn a_run_stopped_at_the_page_cap_keeps_its_progress_and_the_next_one_goes_on(pool: PgPool) {
    let log = busy_log(6_000, Utc::now() - chrono::Duration::minutes(1));
    let listed_ids = ids_of(&log, &listed_event_types());
    let seam = seam_with_log(log).await;
    // 3,600 events to read, ten a page: more than one run's pages.
    let (catch_up, _) = catch_up(&pool, &seam.url(), "[catch_up]\npage_limit = 10");
    let (runs, calls) = run_until_caught_up(&pool, &catch_up, &seam).await;
    assert!(runs >= 2, "{calls:?}");
    assert_eq!(stored_ids(&pool, "%").await, listed_ids);
    let (error, success): (Option<String>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT last_error, last_success_at FROM catch_up_state").fetch_one(&pool).await.unwrap();
    assert_eq!(error, None);
    assert!(success.is_some());
}

#[sqlx::test]
async fn more_events_at_one_time_than_a_page_holds_do_not_stall_catch_up(pool: PgPool) {
    let now = Utc::now();
    let crowded = now - chrono::Duration::minutes(30);
    let mut log: Vec<Value> =
        (0..25).map(|i| logged_event("access_code.changed", &format!("ac_same_{i}"), crowded)).collect();
    let around: Vec<Value> = [-20i64, -10, 10, 20]
        .iter()
        .map(|m| logged_event("access_code.changed", &format!("ac_{m}"), crowded + chrono::Duration::minutes(*m)))
        .collect();
    log.extend(around.clone());
    let seam = seam_with_log(log).await;
    let (catch_up, _) = catch_up(&pool, &seam.url(), "[catch_up]\npage_limit = 10");
    let outcome = catch_up.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { .. }), "{outcome:?}");
    let stored = stored_ids(&pool, "%").await;
    for event in &around {
        assert!(stored.contains(event["event_id"].as_str().unwrap()), "events before and after are read");
    }
    assert!(stored.len() >= 4 + 10, "a page of the crowded millisecond: {}", stored.len());
    assert!(matches!(catch_up.run_workspace(0).await.unwrap(), RunOutcome::Completed { .. }), "and the next run too");
}

#[sqlx::test]
async fn a_run_that_fails_half_way_keeps_the_windows_it_finished(pool: PgPool) {
    let now = Utc::now();
    let log: Vec<Value> = (0..40)
        .map(|i| logged_event("access_code.changed", &format!("ac_{i}"), now - chrono::Duration::minutes(120 - 3 * i)))
        .collect();
    let seam = wiremock::MockServer::start().await;
    let answering = |n: u64| {
        wiremock::Mock::given(wiremock::matchers::path("/events/list"))
            .respond_with(event_log(log.clone()))
            .up_to_n_times(n)
            .with_priority(1)
    };
    answering(12).mount(&seam).await;
    wiremock::Mock::given(wiremock::matchers::path("/events/list"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&seam)
        .await;
    let (catch_up, _) = catch_up(&pool, &seam.uri(), "[catch_up]\npage_limit = 5");
    let error = catch_up.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("HTTP 503"), "{error:#}");
    let (mark, outcome, found): (Option<DateTime<Utc>>, String, i32) =
        sqlx::query_as("SELECT high_water_mark, last_outcome, last_events_found FROM catch_up_state")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mark = mark.expect("the windows read before the failure moved the mark");
    assert_eq!(outcome, "failed");
    let stored = count(&pool, "seam_events").await;
    assert!(stored > 0 && stored == i64::from(found), "{stored} stored, {found} found");
    let before_mark = log.iter().filter(|e| e["created_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap() < mark);
    assert_eq!(before_mark.count() as i64, stored, "every event before the mark, none after");

    // Seam answers again: the next run starts at the mark (less the overlap) and reads the rest.
    seam.reset().await;
    answering(1_000).mount(&seam).await;
    let outcome = catch_up.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { .. }), "{outcome:?}");
    assert_eq!(count(&pool, "seam_events").await, 40);
    let first: Value = serde_json::from_slice(&seam.received_requests().await.unwrap()[0].body).unwrap();
    let from = first["between"][0].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    assert_eq!(from, mark - chrono::Duration::seconds(300) - chrono::Duration::milliseconds(1));
}

#[sqlx::test]
async fn two_instances_running_catch_up_at_once_do_the_work_once(pool: PgPool) {
    let event = logged_event("access_code.created", "ac_1", Utc::now() - chrono::Duration::minutes(1));
    let seam = seam_with_log(vec![event]).await;
    // Slow: the two runs overlap.
    seam.set_mode(Mode::Slow(Duration::from_millis(500)));
    let (a, _) = catch_up(&pool, &seam.url(), "");
    let (b, _) = catch_up(&pool, &seam.url(), "");
    let (a, b) = tokio::join!(a.run_workspace(0), b.run_workspace(0));
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
    let error = catch_up.run_workspace(0).await.unwrap_err();
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
        // Off here: its own tests below.
        settled_interval_seconds: 0,
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
    assert_eq!(report, SweepReport { stuck: 3, time_bound: 0, settled: 0 });
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
    assert_eq!(report, SweepReport { stuck: 0, time_bound: 2, settled: 0 });
    let queued: Vec<String> = sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, vec!["ended", "started"]);
}

/// `count` settled codes `settled_0`… as fetches left them, `fetched` ago (SQL interval).
async fn settled_codes(pool: &PgPool, prefix: &str, count: i32, fetched: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO access_codes (access_code_id, device_id, status, type, fetched_at, status_changed_at)
         SELECT '{prefix}_' || i, 'device_1', CASE WHEN i % 5 = 0 THEN 'unset' ELSE 'set' END, 'ongoing',
                now() - interval '{fetched}' + i * interval '1 millisecond', now() - interval '30 days'
         FROM generate_series(1, {count}) AS i"
    )))
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn settled_codes_are_refetched_a_steady_few_each_sweep_and_all_within_the_settled_interval(pool: PgPool) {
    settled_codes(&pool, "old", 1_200, "2 days").await;
    settled_codes(&pool, "recent", 50, "10 minutes").await;
    mirrored(
        &pool,
        "gone",
        "set",
        "ongoing",
        ["now() - interval '2 days'", "now() - interval '2 days'", "NULL", "NULL"],
    )
    .await;
    sqlx::query("UPDATE access_codes SET deleted_at = now() WHERE access_code_id = 'gone'")
        .execute(&pool)
        .await
        .unwrap();
    let settings = SweepSettings { settled_interval_seconds: 3600, ..sweep_settings() };
    // 1,250 settled codes, a sweep a minute, each once an hour: 1250 / 60 ≈ 21 a sweep, plus a tenth.
    let bound = (1_250.0 * 1.1 / 60.0_f64).ceil() as usize;
    assert_eq!(bound, 23);
    let seam = seam_with_log(vec![]).await;
    let (worker, _) = worker(&pool, &seam.url(), "");

    let mut per_sweep = Vec::new();
    for minute in 0..60 {
        let report = sweep_once(&pool, &settings).await.unwrap();
        assert_eq!((report.stuck, report.time_bound), (0, 0));
        assert!(report.settled <= bound, "minute {minute}: {} queued, at most {bound}", report.settled);
        per_sweep.push(report.settled);
        let queued: Vec<String> =
            sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches").fetch_all(&pool).await.unwrap();
        assert_eq!(queued.len(), report.settled);
        if minute < 45 {
            assert!(queued.iter().all(|id| id.starts_with("old_")), "minute {minute}: recently fetched ones wait");
        }
        worker.drain().await.unwrap();
        // A minute passes.
        sqlx::query("UPDATE access_codes SET fetched_at = fetched_at - interval '60 seconds'")
            .execute(&pool)
            .await
            .unwrap();
    }
    let calls = seam.calls_per_code();
    assert_eq!(calls.len(), 1_250, "every settled code within the hour: {per_sweep:?}");
    assert!(calls.values().all(|n| *n == 1), "each once");
    assert!(!calls.contains_key("gone"), "deleted codes are not swept");
    assert!(per_sweep[..50].iter().all(|n| *n >= 20), "a steady trickle while codes are due: {per_sweep:?}");
    println!("settled sweep of 1,250 codes, a sweep a minute, hourly: queued per sweep {per_sweep:?}");

    // An hour after the first ones, they come round again, at the same pace.
    let report = sweep_once(&pool, &settings).await.unwrap();
    assert!(report.settled > 0 && report.settled <= bound, "{report:?}");
}

#[sqlx::test]
async fn the_settled_sweep_leaves_queued_and_stuck_codes_alone_and_0_turns_it_off(pool: PgPool) {
    settled_codes(&pool, "old", 30, "2 days").await;
    mirrored(
        &pool,
        "stuck",
        "setting",
        "ongoing",
        ["now() - interval '5 minutes'", "now() - interval '2 days'", "NULL", "NULL"],
    )
    .await;
    let off = sweep_settings();
    assert_eq!(sweep_once(&pool, &off).await.unwrap(), SweepReport::default(), "0: off");
    assert_eq!(count(&pool, "access_code_refetches").await, 0);

    // Thirty codes, each once every 10 minutes, a sweep a minute: 3.3 a sweep, 4 with the margin.
    let on = SweepSettings { settled_interval_seconds: 600, ..sweep_settings() };
    let first = sweep_once(&pool, &on).await.unwrap();
    assert_eq!(first, SweepReport { stuck: 0, time_bound: 0, settled: 4 });
    let second = sweep_once(&pool, &on).await.unwrap();
    assert_eq!(second.settled, 4, "the next ones, not those already queued");
    let queued: Vec<String> = sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    let oldest: Vec<String> =
        ["old_1", "old_2", "old_3", "old_4", "old_5", "old_6", "old_7", "old_8"].map(String::from).into();
    assert_eq!(queued, oldest, "longest unfetched first, never a stuck code");
}
