//! Background work that survives its failures: supervised tasks are restarted and
//! counted, a panicking step fails that step and not its loop, catch-up's lock
//! is released however a run ends, and a transaction abandoned while it begins
//! leaves no transaction open on the pool's connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seam_access_sync::jobs::catch_up::{CatchUp, RunOutcome};
use seam_access_sync::jobs::periodic;
use seam_access_sync::jobs::supervisor::{Backoff, Supervisor};
use seam_access_sync::jobs::worker::work_loop;
use seam_access_sync::store::{self, queue};
use seam_access_sync::telemetry::metrics::{Metrics, Task, TaskLabel};
use sqlx::PgPool;
use test_kit::{Answer, Mode, StandIn};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;
use seam_access_sync::seam::workspaces::CLAIM_EVERYTHING;

/// Polls `check` until it yields a value; fails after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails the test instead of hanging when `future` never finishes.
async fn finishes<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future).await.unwrap_or_else(|_| panic!("not within 20 s: {what}"))
}

fn failures(metrics: &Metrics, task: Task) -> u64 {
    metrics.task_failures.get_or_create(&TaskLabel { task }).get()
}

fn quick_restarts() -> Backoff {
    Backoff { first: Duration::from_millis(10), max: Duration::from_millis(100), reset_after: Duration::from_secs(60) }
}

#[tokio::test]
async fn a_supervised_task_that_panics_is_restarted_and_counted() {
    let (metrics, shutdown) = (Arc::new(Metrics::new()), CancellationToken::new());
    let mut supervisor = Supervisor::new(shutdown.clone(), metrics.clone()).with_backoff(quick_restarts());
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = starts.clone();
    supervisor.spawn(Task::CatchUp, move |stop| {
        let start = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            assert!(start > 0, "the first start panics");
            stop.cancelled().await;
        }
    });
    eventually("restarted", || async { (starts.load(Ordering::SeqCst) == 2).then_some(()) }).await;
    assert_eq!(failures(&metrics, Task::CatchUp), 1);

    shutdown.cancel();
    finishes("the supervisor stops", supervisor.wait()).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2, "a task that stops at shutdown is not restarted");
    assert_eq!(failures(&metrics, Task::CatchUp), 1);
}

#[tokio::test]
async fn a_supervised_task_that_returns_before_shutdown_is_restarted_and_counted() {
    let (metrics, shutdown) = (Arc::new(Metrics::new()), CancellationToken::new());
    let mut supervisor = Supervisor::new(shutdown.clone(), metrics.clone()).with_backoff(quick_restarts());
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = starts.clone();
    supervisor.spawn(Task::Sweep, move |stop| {
        let start = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if start >= 2 {
                stop.cancelled().await;
            }
        }
    });
    eventually("restarted twice", || async { (starts.load(Ordering::SeqCst) == 3).then_some(()) }).await;
    assert_eq!(failures(&metrics, Task::Sweep), 2);
    shutdown.cancel();
    finishes("the supervisor stops", supervisor.wait()).await;
    assert_eq!(failures(&metrics, Task::Sweep), 2);
}

#[tokio::test]
async fn shutdown_waits_for_every_task_to_finish() {
    let (metrics, shutdown) = (Arc::new(Metrics::new()), CancellationToken::new());
    let mut supervisor = Supervisor::new(shutdown.clone(), metrics.clone());
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let finished = finished.clone();
        supervisor.spawn(Task::Prune, move |stop| {
            let finished = finished.clone();
            async move {
                stop.cancelled().await;
                // Work still in flight when shutdown came.
                tokio::time::sleep(Duration::from_millis(100)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    assert_eq!(supervisor.len(), 3);
    shutdown.cancel();
    finishes("the supervisor stops", supervisor.wait()).await;
    assert_eq!(finished.load(Ordering::SeqCst), 3);
    assert_eq!(failures(&metrics, Task::Prune), 0);
}

#[tokio::test]
async fn a_periodic_step_that_panics_is_counted_and_the_next_period_runs() {
    let (metrics, shutdown) = (Metrics::new(), CancellationToken::new());
    let runs = AtomicUsize::new(0);
    let step = || {
        let run = runs.fetch_add(1, Ordering::SeqCst);
        let shutdown = shutdown.clone();
        async move {
            assert!(run > 0, "the first period panics");
            shutdown.cancel();
        }
    };
    finishes("the loop stops", periodic::every(Task::Sweep, &metrics, 1, shutdown.clone(), step)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(failures(&metrics, Task::Sweep), 1);
}

#[sqlx::test]
async fn a_worker_step_that_panics_fails_that_fetch_not_the_loop(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    seam.answer("ac_1", Answer::found(fixtures::access_code("ac_1")));
    let extra = "[worker]\nlease_seconds = 1\npoll_interval_ms = 50\n[seam]\ntimeout_ms = 500";
    let (worker, _) = worker(&pool, &seam.url(), extra);
    app.deliver("msg_1", &access_code_event("access_code.changed", "ac_1", "2026-11-25T10:00:00Z").to_string()).await;

    // The first step claims the code and panics mid-fetch; the rest are the worker's.
    let (wake, metrics, stop, steps) = (Notify::new(), Metrics::new(), CancellationToken::new(), AtomicUsize::new(0));
    let (pool_ref, worker, steps_ref) = (&pool, &worker, &steps);
    let step = move || async move {
        if steps_ref.fetch_add(1, Ordering::SeqCst) == 0 {
            let claim = queue::claim_next(pool_ref, Duration::from_secs(1), &CLAIM_EVERYTHING).await.unwrap();
            assert!(claim.is_some(), "the code was due");
            panic!("a bug in the middle of fetching ac_1");
        }
        worker.try_execute_task().await
    };
    let check = async {
        eventually("the code is fetched after its lease expired", || async {
            (count(&pool, "access_code_refetches").await == 0).then_some(())
        })
        .await;
        stop.cancel();
    };
    let ((), ()) = finishes(
        "the loop stops",
        futures::future::join(work_loop(step, &wake, Duration::from_millis(50), &metrics, &stop), check),
    )
    .await;

    let status: Option<String> = sqlx::query_scalar("SELECT status FROM access_codes WHERE access_code_id = 'ac_1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("set"));
    assert!(steps.load(Ordering::SeqCst) > 2, "the loop went on after the panic");
    assert_eq!(failures(&metrics, Task::Worker), 1);
    assert!(captured_logs().contains("a bug in the middle of fetching ac_1"), "the panic is logged");
}

#[sqlx::test]
async fn the_worker_process_supervises_its_background_tasks(pool: PgPool) {
    // With a read-API token, so that the change stream's listener runs too.
    let extra = "[server]\nrun_mode = \"all\"\n[import]\non_start = true\n\
                 [api]\ntokens = \"supervision-token-0123456789abcdef0123\"";
    let app = spawn_app_with(pool.clone(), settings("http://127.0.0.1:9", extra)).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for task in Task::ALL {
        let line = format!("seam_access_sync_task_failures_total{{task=\"{task}\"}} 0");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    finishes("the app stops", app.stop()).await;
}

/// One replica's catch-up, on a pool of its own built as the service builds it
/// (the test pool closes idle connections within a second, which would hide a lock
/// left on one).
async fn replica(pool: &PgPool, seam_url: &str, extra: &str) -> CatchUp {
    let settings = settings(seam_url, extra);
    let own = store::pool_options(&settings.database).connect_with((*pool.connect_options()).clone()).await.unwrap();
    catch_up(&own, seam_url, extra).0
}

#[sqlx::test]
async fn catch_up_releases_its_lock_when_a_run_fails(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_mode(Mode::Status(500));
    let (first, second) = (replica(&pool, &seam.url(), "").await, replica(&pool, &seam.url(), "").await);
    assert!(first.run_workspace(0).await.is_err());
    seam.set_mode(Mode::Normal);
    let outcome = second.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { .. }), "{outcome:?}");
    assert!(matches!(first.run_workspace(0).await.unwrap(), RunOutcome::Completed { .. }));
}

#[sqlx::test]
async fn catch_up_releases_its_lock_when_a_run_is_dropped_mid_way(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    // The first call hangs (the run is dropped while waiting for it); later ones answer.
    seam.set_mode(Mode::Slow(Duration::from_secs(60)));
    let first = replica(&pool, &seam.url(), "[seam]\ntimeout_ms = 60000\n[worker]\nlease_seconds = 120").await;
    let second = replica(&pool, &seam.url(), "").await;

    // The run's pool lives on without it, as the service's pool does.
    let running = first.clone();
    let run = tokio::spawn(async move { running.run_workspace(0).await });
    eventually("the first run is waiting for Seam", || async { (!seam.event_log_requests().is_empty()).then_some(()) })
        .await;
    seam.set_mode(Mode::Normal);
    assert_eq!(second.run_workspace(0).await.unwrap(), RunOutcome::Skipped, "the first run holds the lock");

    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let outcome = eventually("another replica runs catch-up", || async {
        Some(second.run_workspace(0).await.unwrap()).filter(|outcome| *outcome != RunOutcome::Skipped)
    })
    .await;
    assert!(matches!(outcome, RunOutcome::Completed { .. }), "{outcome:?}");
    assert!(matches!(first.run_workspace(0).await.unwrap(), RunOutcome::Completed { .. }));
}

/// Whether `one`'s session was left inside a transaction: a statement on it first
/// (it runs once the abandoned BEGIN's connection is back in the pool), then a look
/// at its state from another session.
async fn left_in_transaction(one: &PgPool, observer: &PgPool) -> bool {
    sqlx::query!("SELECT 1 AS one").fetch_one(one).await.unwrap();
    sqlx::query_scalar!(
        r#"SELECT count(*) > 0 AS "left!" FROM pg_stat_activity
           WHERE datname = current_database() AND state LIKE 'idle in transaction%'"#
    )
    .fetch_one(observer)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_transaction_abandoned_while_it_begins_leaves_no_transaction_open(pool: PgPool) {
    // One connection, so every step below uses the one a cancelled BEGIN touched.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    assert!(!left_in_transaction(&one, &pool).await);
    // Abandoned at every point from before the BEGIN is sent to after its answer.
    let mut abandoned = 0;
    for step in 0..200u64 {
        let begun = tokio::time::timeout(Duration::from_micros(step * 10), store::begin(&one)).await;
        abandoned += usize::from(begun.is_err());
        drop(begun);
        assert!(!left_in_transaction(&one, &pool).await, "left in a transaction after {} µs", step * 10);
    }
    assert!(abandoned > 0, "no BEGIN was abandoned: the test proves nothing");
    // And a transaction that does begin still commits.
    let mut tx = store::begin(&one).await.unwrap();
    sqlx::query("CREATE TABLE begun (id int)").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(sqlx::query("SELECT id FROM begun").fetch_all(&one).await.unwrap().is_empty());
}
