//! Background jobs that run at start and then on a period until shutdown
//! (catch-up, sweeps, pruning): one loop for all of them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::supervisor;
use crate::telemetry::metrics::{Metrics, Task};

/// Runs `step` now and then every `interval_seconds` until `shutdown`; a step in
/// progress when it fires is finished. A step that panics is logged and counted as a
/// failure of `task` (`supervisor::guard`), and the next period runs as usual.
///
/// 0 means the job is off: nothing runs, and this returns at shutdown like a job
/// that is on (under a `Supervisor`, returning earlier would count as a failure).
pub async fn every<F, Fut>(
    task: Task,
    metrics: &Metrics,
    interval_seconds: u64,
    shutdown: CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    if interval_seconds == 0 {
        shutdown.cancelled().await;
        return;
    }
    let pause = Duration::from_secs(interval_seconds);
    loop {
        supervisor::guard(task, metrics, step()).await;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
