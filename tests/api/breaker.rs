//! The Seam circuit breaker end to end through the worker: an outage stops the
//! calls and leaves the queue as it was; recovery is probed, then ramped; a 429
//! pauses every call, not one code.

use std::sync::Arc;
use std::time::Duration;

use seam_access_sync::jobs::worker::{TaskOutcome, TaskResult, Worker};
use seam_access_sync::seam::SeamKeyStatus;
use seam_access_sync::seam::breaker::{Breaker, BreakerState};
use seam_access_sync::seam::client::SeamClient;
use seam_access_sync::seam::event::CodeEndpoint;
use seam_access_sync::seam::workspaces::Workspaces;
use seam_access_sync::store::queue::{self, Failure, RefetchRequest};
use seam_access_sync::telemetry::metrics::Metrics;
use serde_json::json;
use sqlx::PgPool;
use test_kit::seam::Mode;
use test_kit::{Answer, StandIn, eventually_within};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A worker with these settings on top of the tests' own, and the breaker its
/// client shares.
fn worker_with_breaker(pool: &PgPool, seam_url: &str, extra: &str) -> (Worker, Arc<Breaker>) {
    let settings = settings(seam_url, extra);
    let client = SeamClient::new(&settings.seam).unwrap();
    let breaker = client.breaker().clone();
    let workspaces = Workspaces::single(client, SeamKeyStatus::default());
    let metrics = Arc::new(Metrics::new());
    (Worker::new(pool.clone(), workspaces, settings.worker.clone(), false, metrics), breaker)
}

async fn enqueue(pool: &PgPool, ids: &[String]) {
    let mut conn = pool.acquire().await.unwrap();
    for id in ids {
        let request = RefetchRequest {
            access_code_id: id,
            endpoint: CodeEndpoint::Managed,
            device_id: Some("device_1"),
            workspace_id: None,
            connected_account_id: None,
            event: None,
            requests: 1,
        };
        queue::enqueue(&mut conn, &request).await.unwrap();
    }
}

/// (rows in the queue, attempts counted over all of them, dead letters)
async fn queue_state(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), COALESCE(sum(attempts), 0)::int8, count(dead_lettered_at) FROM access_code_refetches",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn an_outage_stops_the_calls_keeps_the_queue_and_recovery_is_probed_then_ramped(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.answer_unknown_codes(|id| json!({ "access_code_id": id, "device_id": "device_1", "status": "set" }));
    seam.set_mode(Mode::Status(503));
    let ids: Vec<String> = (0..10).map(|i| format!("ac_{i}")).collect();
    enqueue(&pool, &ids).await;
    let (worker, breaker) = worker_with_breaker(
        &pool,
        &seam.url(),
        "[seam.breaker]\nfailures = 3\nopen_ms = 700\nmax_open_ms = 1400\nramp_ms = 1000\n\
         [worker]\nconcurrency = 1\npoll_interval_ms = 50\nbackoff_base_ms = 10\nbackoff_max_ms = 10",
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));

    // Three failures open it. Each step is waited for, not timed: on a loaded machine
    // the worker's first calls can come late, and a fixed sleep would race the probe.
    eventually_within(Duration::from_secs(10), "three failures to open the breaker", || async {
        match (breaker.view().state, seam.calls()) {
            (BreakerState::Open, 3) => Ok(()),
            state => Err(format!("{state:?}")),
        }
    })
    .await;
    // Then one probe after open_ms, which fails and opens it for twice as long.
    eventually_within(Duration::from_secs(10), "one probe, then open again", || async {
        match (breaker.view().state, seam.calls()) {
            (BreakerState::Open, 4) => Ok(()),
            state => Err(format!("{state:?}")),
        }
    })
    .await;
    // Without the breaker the worker would call every 50 ms; with it, nothing until
    // the doubled wait (1.4 s) is over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seam.calls(), 4, "three failures and one probe, not a call per retry");
    let (rows, attempts, dead) = queue_state(&pool).await;
    assert_eq!((rows, dead), (10, 0), "every code still queued, none given up");
    assert_eq!(attempts, 4, "only the calls made count as attempts");

    // Seam answers again: the next probe closes it through the ramp and the backlog drains.
    seam.set_mode(Mode::Normal);
    eventually_within(Duration::from_secs(10), "the backlog to drain after recovery", || async {
        match queue_state(&pool).await {
            (0, _, _) => Ok(()),
            state => Err(format!("{state:?}")),
        }
    })
    .await;
    assert_eq!(seam.answered(200), 10, "each code fetched once after recovery");
    assert!(matches!(breaker.view().state, BreakerState::Ramping | BreakerState::Closed));
    stop.cancel();
    run.await.unwrap();
}

#[sqlx::test]
async fn a_429_pauses_every_call_and_the_codes_not_called_keep_their_attempts(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.answer_unknown_codes(|id| json!({ "access_code_id": id, "device_id": "device_1", "status": "set" }));
    seam.answer_next(Answer::status(429).header("retry-after", "30"));
    enqueue(&pool, &["ac_1".to_owned(), "ac_2".to_owned()]).await;
    let (worker, breaker) = worker_with_breaker(&pool, &seam.url(), "");

    let first = worker.try_execute_task().await.unwrap();
    assert!(
        matches!(&first, TaskOutcome::Executed { result: TaskResult::Failed(Failure::Retry { counts: true, .. }), .. }),
        "{first:?}"
    );
    let second = worker.try_execute_task().await.unwrap();
    let TaskOutcome::Executed { access_code_id, result } = &second else { panic!("{second:?}") };
    assert!(matches!(result, TaskResult::Failed(Failure::Retry { counts: false, .. })), "{second:?}");
    assert_eq!(seam.calls(), 1, "the other code is not called while Seam asked to wait");
    let (attempts, error, due_in): (i32, String, f64) = sqlx::query_as(
        "SELECT attempts, last_error, EXTRACT(EPOCH FROM next_attempt_at - now())::float8
         FROM access_code_refetches WHERE access_code_id = $1",
    )
    .bind(access_code_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
    assert!(error.contains("429"), "{error}");
    assert!((25.0..=30.1).contains(&due_in), "due when the pause ends: {due_in}");
    assert!(breaker.view().wait.is_some_and(|w| w > Duration::from_secs(25)));
    assert_eq!(worker.drain().await.unwrap(), vec![], "nothing due until then: drain does not spin");
}
