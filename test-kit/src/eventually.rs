//! Waiting for a condition: poll until it holds or a deadline passes, then fail
//! saying what was awaited and what the probe saw last. Nothing sleeps "long enough".

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How often a probe runs.
const INTERVAL: Duration = Duration::from_millis(25);

/// A wait that ran out: what it waited for and what the probe saw last.
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
    pub last: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?} waiting for {}\nlast seen: {}", self.after, self.what, self.last)
    }
}

impl std::error::Error for TimedOut {}

/// Runs `probe` until it answers `Ok` or `within` passes; the `Err` text of each
/// try is what it saw, and the last one is reported.
pub async fn try_eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() >= within => {
                return Err(TimedOut { what: what.to_owned(), after: started.elapsed(), last });
            }
            Err(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}

/// As [`try_eventually`] with [`DEADLINE`]; panics when it runs out.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(DEADLINE, what, probe).await
}

/// As [`try_eventually`]; panics when it runs out.
pub async fn eventually_within<T, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    try_eventually(within, what, probe).await.unwrap_or_else(|timed_out| panic!("{timed_out}"))
}
