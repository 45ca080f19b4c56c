//! Supervision of the long-running background tasks: every one is kept in one
//! `JoinSet` under a name; one that ends before shutdown, or panics, is logged at
//! ERROR, counted in `seam_access_sync_task_failures_total{task}` and started again
//! after a backoff; at shutdown every one is waited for.
//!
//! A panic inside one step of a loop (one fetch, one periodic run) is caught by
//! `guard` closer to where it happened, so it fails that step and the loop goes on;
//! supervision is the net for what escapes that.
//!
//! Both rely on panics unwinding (the default; no `panic = "abort"` profile).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::{Metrics, Task, TaskLabel};

/// How long to wait before starting a failed task again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after a first failure; doubled after each further one.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A task that ran this long before it failed starts again after `first`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s; back to 1 s after a task ran for 5 minutes.
    fn default() -> Backoff {
        Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60), reset_after: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The wait before a restart, given the wait before the last one (`None`: no
    /// restart yet) and how long the task ran this time.
    pub fn after(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        match previous {
            Some(previous) if ran_for < self.reset_after => previous.saturating_mul(2).min(self.max),
            _ => self.first.min(self.max),
        }
    }
}

/// The background tasks of one process, each restarted when it fails, all stopped
/// by one `CancellationToken`.
pub struct Supervisor {
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    backoff: Backoff,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, metrics: Arc<Metrics>) -> Supervisor {
        Supervisor { tasks: JoinSet::new(), shutdown, metrics, backoff: Backoff::default() }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Supervisor {
        self.backoff = backoff;
        self
    }

    /// Starts the task `start(shutdown)` makes, and starts it again whenever it ends
    /// or panics before `shutdown` fires. The task must return once `shutdown` fires.
    /// `name` labels logs and the failure counter (which starts at 0, so a first
    /// failure shows as an increase).
    pub fn spawn<F, Fut>(&mut self, name: Task, start: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let _ = self.metrics.task_failures.get_or_create(&TaskLabel { task: name });
        let (shutdown, metrics, backoff) = (self.shutdown.clone(), self.metrics.clone(), self.backoff);
        self.tasks.spawn(supervise(name, start, shutdown, metrics, backoff));
    }

    /// How many tasks are supervised.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits until every task has finished: they finish once `shutdown` has fired,
    /// each after the step it is in. Dropping the supervisor instead aborts them.
    pub async fn wait(mut self) {
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a supervisor task was aborted");
            }
        }
    }
}

async fn supervise<F, Fut>(
    name: Task,
    mut start: F,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    backoff: Backoff,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut previous = None;
    loop {
        let started = Instant::now();
        // The task is made inside the guarded future, so a panic making it is caught too.
        let ended = AssertUnwindSafe(async { start(shutdown.clone()).await }).catch_unwind().await;
        let stopping = shutdown.is_cancelled();
        let delay = backoff.after(previous, started.elapsed());
        match (&ended, stopping) {
            (Ok(()), true) => return,
            (Err(panic), true) => {
                tracing::error!(
                    task = %name,
                    panic = panic_message(panic.as_ref()),
                    "background task panicked while stopping"
                );
                metrics.task_failure(name);
                return;
            }
            (Ok(()), false) => tracing::error!(
                task = %name,
                restart_in_ms = delay.as_millis() as u64,
                "background task ended unexpectedly; restarting"
            ),
            (Err(panic), false) => tracing::error!(
                task = %name,
                panic = panic_message(panic.as_ref()),
                restart_in_ms = delay.as_millis() as u64,
                "background task panicked; restarting"
            ),
        }
        metrics.task_failure(name);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        previous = Some(delay);
    }
}

/// Runs one step of the task `task`: its output, or `None` when it panicked (the
/// panic is logged at ERROR and counted in `task_failures_total{task}`), so a loop
/// can go on with its next step.
///
/// Unwind safety is asserted: a step shares only atomics, `Arc`s of thread-safe
/// state and the pool with the rest of its loop, none of which a panic leaves half
/// changed; what the step was writing is rolled back or left to its lease.
pub async fn guard<T>(task: Task, metrics: &Metrics, step: impl Future<Output = T>) -> Option<T> {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(output) => Some(output),
        Err(panic) => {
            tracing::error!(
                task = %task,
                panic = panic_message(panic.as_ref()),
                "a step of a background task panicked; going on"
            );
            metrics.task_failure(task);
            None
        }
    }
}

/// The message a panic was raised with, when it has one.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_one_second_to_a_minute_and_reset_after_a_good_run() {
        let backoff = Backoff::default();
        let brief = Duration::from_millis(10);
        let mut waits = Vec::new();
        let mut previous = None;
        for _ in 0..9 {
            let wait = backoff.after(previous, brief);
            waits.push(wait.as_secs());
            previous = Some(wait);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.after(previous, Duration::from_secs(300)), Duration::from_secs(1));
    }

    #[test]
    fn a_panic_message_is_read_from_either_kind_of_payload() {
        let literal: Box<dyn Any + Send> = Box::new("literal");
        let formatted: Box<dyn Any + Send> = Box::new(format!("formatted {}", 1));
        let other: Box<dyn Any + Send> = Box::new(7);
        assert_eq!(panic_message(literal.as_ref()), "literal");
        assert_eq!(panic_message(formatted.as_ref()), "formatted 1");
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
