//! Background jobs that run at start and then on a period until shutdown
//! (catch-up, sweeps, pruning): one loop for all of them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `step` now and then every `interval_seconds` until `shutdown`; 0 means the
/// job is off and nothing runs.
pub async fn every<F, Fut>(interval_seconds: u64, shutdown: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    if interval_seconds == 0 {
        return;
    }
    let pause = Duration::from_secs(interval_seconds);
    loop {
        step().await;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
