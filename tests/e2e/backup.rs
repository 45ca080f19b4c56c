//! Backup access codes against Seam's fake: with `backup.pull_on_failure` the service
//! pulls one backup, exactly once, for a time-bound code that fails to program (also
//! when it is killed while Seam's answer is on its way); off, or for an ongoing code,
//! it pulls none.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually;

use crate::rig::{E2e, seam_time};

const PULL: &str = "POST /access_codes/pull_backup_access_code";
const ON: (&str, &str) = ("APP_BACKUP__PULL_ON_FAILURE", "true");

/// A code on lock 0 (time-bound: starts in an hour, ends in a day), mirrored; its id.
async fn mirrored_code(e2e: &E2e, name: &str, time_bound: bool) -> String {
    let frame = if time_bound {
        json!({ "starts_at": seam_time(Utc::now() + chrono::Duration::hours(1)),
                "ends_at": seam_time(Utc::now() + chrono::Duration::hours(25)) })
    } else {
        json!({})
    };
    let (code, created) = e2e.harness.create_code(0, name, frame).await;
    let id = code["access_code_id"].as_str().unwrap().to_owned();
    assert_eq!(code["type"], if time_bound { "time_bound" } else { "ongoing" }, "{code}");
    e2e.deliver(&created).await;
    e2e.applied(&id, &created).await;
    id
}

/// Seam fails to program the code (`failed_to_set_on_device`) and says a backup is
/// available; the service mirrors the failure.
async fn fails_to_set(e2e: &E2e, id: &str) {
    let error = json!({
        "error_code": "failed_to_set_on_device",
        "message": "The lock rejected the code.",
        "is_access_code_error": true,
        "created_at": seam_time(Utc::now()),
    });
    let patch = json!({ "status": "setting", "errors": [error], "is_backup_access_code_available": true });
    let row =
        e2e.step(id, patch, "access_code.failed_to_set_on_device", json!({ "access_code_errors": [error] })).await;
    assert_eq!(row.errors.0[0]["error_code"], "failed_to_set_on_device");
}

/// `(pulled_backup_access_code_id, backup_of_access_code_id, is_backup)` of a mirrored code.
async fn link(e2e: &E2e, id: &str) -> Option<(Option<String>, Option<String>, Option<bool>)> {
    sqlx::query_as(
        "SELECT pulled_backup_access_code_id, backup_of_access_code_id, is_backup
         FROM access_codes WHERE access_code_id = $1",
    )
    .bind(id)
    .fetch_optional(&e2e.db)
    .await
    .expect("read the link")
}

/// `(state, backup_access_code_id)` of the code's pull, if one was decided.
async fn pull_row(e2e: &E2e, id: &str) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT state, backup_access_code_id FROM backup_pulls WHERE access_code_id = $1")
        .bind(id)
        .fetch_optional(&e2e.db)
        .await
        .expect("read backup_pulls")
}

/// Waits until the backup the fake pulled for `id` is mirrored and linked both ways,
/// the pull recorded `pulled` and the original's history says `backup_pulled`.
/// Returns the backup's id.
async fn backup_mirrored(e2e: &E2e, id: &str) -> String {
    let backup = eventually(&format!("a backup of {id} mirrored and linked both ways"), || async {
        let (status, code) = e2e.harness.fake_get(id).await;
        let Some(backup) = code["pulled_backup_access_code_id"].as_str().map(str::to_owned) else {
            return Err(format!("the fake: {status} {code}"));
        };
        let original = link(e2e, id).await;
        let mirrored = link(e2e, &backup).await;
        let pull = pull_row(e2e, id).await;
        let original_links =
            original.as_ref().map(|(pulled, of, is_backup)| (pulled.clone(), of.clone(), *is_backup == Some(true)));
        if original_links == Some((Some(backup.clone()), None, false))
            && mirrored == Some((None, Some(id.to_owned()), Some(true)))
            && pull == Some(("pulled".into(), Some(backup.clone())))
        {
            Ok(backup)
        } else {
            Err(format!("original {original:?}; backup {backup} {mirrored:?}; pull {pull:?}"))
        }
    })
    .await;
    let changes: Vec<String> =
        sqlx::query_scalar("SELECT unnest(changes) FROM access_code_history WHERE access_code_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&e2e.db)
            .await
            .unwrap();
    assert!(changes.contains(&"backup_pulled".to_owned()), "history of {id}: {changes:?}");
    let row = e2e.mirror(&backup).await.unwrap();
    assert_eq!(row.kind.as_deref(), Some("time_bound"));
    assert_eq!(row.code, None, "no PIN without store_pins");
    backup
}

/// Checks `check` every 100 ms for `window`; fails the moment it does not hold. For
/// what must NOT happen: `window` spans many of the worker's 200 ms rounds.
async fn holds_for(window: Duration, what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Err(seen) = check().await {
            panic!("{what}: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test]
async fn a_time_bound_code_that_fails_to_set_gets_one_backup_mirrored_and_linked(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let e2e = E2e::start_with(database, &[ON]).await;
    let id = mirrored_code(&e2e, "Guest", true).await;
    fails_to_set(&e2e, &id).await;

    let backup = backup_mirrored(&e2e, &id).await;
    assert_ne!(backup, id);
    assert_eq!(e2e.harness.calls_to(PULL).await, 1);
    // Never twice: the decision stands while the code stays failed.
    holds_for(Duration::from_secs(1), "no second pull", async || match e2e.harness.calls_to(PULL).await {
        1 => Ok(()),
        n => Err(format!("{n} pull calls")),
    })
    .await;
    assert!(e2e.metrics().await.contains("backup_pulls_total{outcome=\"pulled\"} 1"), "{}", e2e.metrics().await);
    e2e.finish().await;
}

/// The service is SIGKILLed after sending the pull, while Seam's answer is on its way
/// (the front holds it back; the fake has pulled): started again, it takes the
/// `sending` row over once its lease ends, finds the backup on the code, and mirrors
/// it without a second call.
#[sqlx::test]
async fn a_pull_whose_answer_is_lost_to_a_kill_is_finished_after_restart_without_a_second_call(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    // A short lease, so the killed process's claim ends soon (it must outlast the
    // Seam timeout, which the held answer must in turn outlast).
    let settings = [ON, ("APP_WORKER__LEASE_SECONDS", "3"), ("APP_SEAM__TIMEOUT_MS", "2500")];
    let mut e2e = E2e::start_with(database, &settings).await;
    let id = mirrored_code(&e2e, "Guest", true).await;
    e2e.harness.hold_next(PULL, 60_000).await;
    fails_to_set(&e2e, &id).await;

    eventually("the pull sent, its answer held", || async {
        match e2e.harness.holding(PULL).await {
            1 => Ok(()),
            n => Err(format!("holding {n}")),
        }
    })
    .await;
    assert_eq!(pull_row(&e2e, &id).await, Some(("sending".into(), None)), "recorded before the call");
    let (_, code) = e2e.harness.fake_get(&id).await;
    assert!(code["pulled_backup_access_code_id"].is_string(), "Seam has pulled: {code}");
    e2e.kill_and_relaunch().await;
    assert!(
        !e2e.service.logs().contains("backup pull failed; will retry"),
        "killed while waiting, not after a timeout"
    );

    let backup = backup_mirrored(&e2e, &id).await;
    let (_, code) = e2e.harness.fake_get(&id).await;
    assert_eq!(code["pulled_backup_access_code_id"], json!(backup));
    assert_eq!(e2e.harness.calls_to(PULL).await, 1, "one pull call in all");
    assert!(e2e.service.logs().contains("backup access code found pulled by an earlier call"));
    e2e.finish().await;
}

#[sqlx::test]
async fn with_the_setting_off_no_backup_is_pulled(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let id = mirrored_code(&e2e, "Guest", true).await;
    fails_to_set(&e2e, &id).await;
    holds_for(Duration::from_secs(2), "no pull with backup.pull_on_failure off", async || {
        match (e2e.harness.calls_to(PULL).await, pull_row(&e2e, &id).await) {
            (0, None) => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let (pulled, of, is_backup) = link(&e2e, &id).await.unwrap();
    assert_eq!((pulled, of), (None, None));
    assert_ne!(is_backup, Some(true));
    e2e.finish().await;
}

/// An ongoing code that fails is left alone; a time-bound one failing after it is
/// pulled for, so the service has looked at both.
#[sqlx::test]
async fn an_ongoing_code_that_fails_is_never_pulled_for(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start_with(database, &[ON]).await;
    let ongoing = mirrored_code(&e2e, "Staff", false).await;
    fails_to_set(&e2e, &ongoing).await;
    let time_bound = mirrored_code(&e2e, "Guest", true).await;
    fails_to_set(&e2e, &time_bound).await;

    backup_mirrored(&e2e, &time_bound).await;
    assert_eq!(pull_row(&e2e, &ongoing).await, None);
    assert_eq!(e2e.harness.calls_to(PULL).await, 1, "for the time-bound code only");
    assert!(
        !e2e.harness.calls_for(&ongoing).await.iter().any(|(route, _)| route == PULL),
        "never for the ongoing code"
    );
    let (pulled, of, _) = link(&e2e, &ongoing).await.unwrap();
    assert_eq!((pulled, of), (None, None));
    e2e.finish().await;
}
