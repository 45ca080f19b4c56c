//! The worker: claim a due re-fetch → fetch the code from Seam → store it in the
//! mirror. `try_execute_task` does exactly one; `run` loops it on N tasks, woken by
//! NOTIFY with polling as the fallback.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::supervisor::{self, Supervisor};
use crate::config::WorkerSettings;
use crate::seam::client::FetchOutcome;
use crate::seam::event::CodeEndpoint;
use crate::seam::workspaces::{Route, Workspace, Workspaces};
use crate::store::kept::KeptConnection;
use crate::store::mirror::{self, Applied, ChangeKind, Fetch, Observed, Origin};
use crate::store::queue::{self, Claim, Completion, Failure, REFETCH_CHANNEL};
use crate::telemetry::metrics::{Metrics, MirrorWrite, Outcome, SeamLabels, Task, WorkerError};

#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    workspaces: Workspaces,
    settings: WorkerSettings,
    store_pins: bool,
    metrics: Arc<Metrics>,
    /// Wakes the loops: on NOTIFY, and when a code asked for again is due.
    wake: Arc<Notify>,
    /// The connection of one-off steps (`try_execute_task`); each loop keeps its own.
    one_off: Arc<Mutex<KeptConnection>>,
}

/// What one step of the worker did.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Nothing is due.
    EmptyQueue,
    /// One code was fetched; `result` says what became of it.
    Executed { access_code_id: String, result: TaskResult },
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    /// Stored in the mirror (or dropped as stale); the queue row is done or due again.
    Stored { applied: Applied, completion: Completion },
    /// Failed; retried after `delay`, or dead-lettered.
    Failed(Failure),
    /// Another worker took the claim over (this one outlived its lease).
    ClaimLost,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        workspaces: Workspaces,
        settings: WorkerSettings,
        store_pins: bool,
        metrics: Arc<Metrics>,
    ) -> Worker {
        let one_off = Arc::new(Mutex::new(KeptConnection::new(pool.clone())));
        Worker { pool, workspaces, settings, store_pins, metrics, wake: Arc::new(Notify::new()), one_off }
    }

    /// The wake-up of this worker's loops, for work queued in this process.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Claims, fetches and stores one due re-fetch.
    pub async fn try_execute_task(&self) -> anyhow::Result<TaskOutcome> {
        match self.one_off.try_lock() {
            Ok(mut kept) => self.execute_task(&mut kept).await,
            // Another one-off step holds it (a test stepping two at once): a connection of its own.
            Err(_) => self.execute_task(&mut KeptConnection::new(self.pool.clone())).await,
        }
    }

    /// `try_execute_task` on `kept`: every statement of the step runs on that one
    /// connection (claim, store, fail), with no pool checkout or return in between.
    async fn execute_task(&self, kept: &mut KeptConnection) -> anyhow::Result<TaskOutcome> {
        kept.run(|mut conn| async move {
            let outcome = self.execute_task_on(&mut conn).await;
            (conn, outcome)
        })
        .await
    }

    async fn execute_task_on(&self, conn: &mut PgConnection) -> anyhow::Result<TaskOutcome> {
        let filter = self.workspaces.claim_filter();
        let Some(claim) = queue::claim_next(&mut *conn, self.settings.lease(), &filter).await? else {
            return Ok(TaskOutcome::EmptyQueue);
        };
        let Route::Fetch(workspace) = self.workspaces.route(claim.workspace_id.as_deref()) else {
            // The workspaces changed between the claim and now: wait, like a rejected key.
            let delay = Duration::from_secs(self.settings.auth_failure_retry_seconds);
            let error = format!(
                "no configured workspace serves workspace {}",
                claim.workspace_id.as_deref().unwrap_or("(none named)")
            );
            let result = self.fail(conn, &claim, Failure::Retry { delay, counts: false }, &error).await?;
            return Ok(TaskOutcome::Executed { access_code_id: claim.access_code_id, result });
        };
        let (endpoint, outcome) = self.fetch_confirmed(workspace, &claim).await;
        let result = match outcome {
            FetchOutcome::Found(fetched) => {
                workspace.key_status.accepted();
                match self.store(conn, &claim, endpoint, Observed::Found(&fetched)).await {
                    // An answer Postgres cannot hold (a NUL character, say) would fail
                    // every retry the same way: give it to an operator instead.
                    Err(e) if e.downcast_ref::<sqlx::Error>().is_some_and(crate::store::is_data_error) => {
                        self.fail(conn, &claim, Failure::DeadLetter, &format!("Seam's answer cannot be stored: {e}"))
                            .await?
                    }
                    stored => stored?,
                }
            }
            FetchOutcome::Gone => {
                workspace.key_status.accepted();
                self.store(conn, &claim, endpoint, Observed::Gone).await?
            }
            FetchOutcome::Transient { reason, retry_after, .. } => {
                let failure = if claim.attempts >= self.settings.max_attempts {
                    Failure::DeadLetter
                } else {
                    Failure::Retry { delay: self.backoff(claim.attempts, retry_after), counts: true }
                };
                self.fail(conn, &claim, failure, &reason).await?
            }
            // Seam is failing: the breaker made no call. The code keeps its attempts and
            // is due when the breaker lets calls through again (the loops wait for
            // the breaker before claiming, so this happens only in a race for a probe).
            FetchOutcome::NotCalled { reason, retry_in } => {
                self.fail(conn, &claim, Failure::Retry { delay: retry_in, counts: false }, &reason).await?
            }
            FetchOutcome::KeyRejected { status, message } => {
                tracing::error!(
                    status,
                    %message,
                    workspace = %workspace.label,
                    "Seam rejected the API key of this workspace (SEAM_API_KEY or its [[workspaces]] entry): its re-fetches are kept and retried, but its mirror is not updating"
                );
                workspace.key_status.rejected(format!("HTTP {status}: {message}"));
                let delay = Duration::from_secs(self.settings.auth_failure_retry_seconds);
                self.fail(
                    conn,
                    &claim,
                    Failure::Retry { delay, counts: false },
                    &format!("API key rejected: HTTP {status}: {message}"),
                )
                .await?
            }
            FetchOutcome::Rejected { status, message } => {
                self.fail(conn, &claim, Failure::DeadLetter, &format!("HTTP {status}: {message}")).await?
            }
        };
        Ok(TaskOutcome::Executed { access_code_id: claim.access_code_id, result })
    }

    /// Runs `try_execute_task` until nothing is due; returns how many it executed.
    /// Tests use it to drive the queue step by step.
    pub async fn drain(&self) -> anyhow::Result<Vec<TaskOutcome>> {
        let mut done = Vec::new();
        loop {
            match self.try_execute_task().await? {
                TaskOutcome::EmptyQueue => return Ok(done),
                executed => done.push(executed),
            }
        }
    }

    /// Fetches the claimed code. A 404 from one endpoint is confirmed against the
    /// other before it counts: a code converted between managed and unmanaged lives
    /// on there, and a late event may have named the wrong one. Returns the endpoint
    /// that answered last, and its answer.
    async fn fetch_confirmed(&self, workspace: &Workspace, claim: &Claim) -> (CodeEndpoint, FetchOutcome) {
        let outcome = self.fetch(workspace, &claim.access_code_id, claim.endpoint, claim.attempts).await;
        if outcome != FetchOutcome::Gone {
            return (claim.endpoint, outcome);
        }
        let other = claim.endpoint.other();
        let confirmation = self.fetch(workspace, &claim.access_code_id, other, claim.attempts).await;
        match confirmation {
            // Gone from both: deleted (reported against the endpoint the claim named).
            FetchOutcome::Gone => (claim.endpoint, FetchOutcome::Gone),
            // Found there, or no answer: the confirmation's outcome decides.
            _ => (other, confirmation),
        }
    }

    /// One call to Seam for one code, timed and counted.
    async fn fetch(
        &self,
        workspace: &Workspace,
        access_code_id: &str,
        endpoint: CodeEndpoint,
        attempt: i32,
    ) -> FetchOutcome {
        let started = std::time::Instant::now();
        let outcome = workspace.client.get_access_code(access_code_id, endpoint).await;
        let labels = SeamLabels {
            endpoint,
            outcome: outcome.kind(),
            status: outcome.status().map_or_else(|| "none".to_owned(), |s| s.to_string()),
            workspace: self.workspaces.metric_label(workspace),
        };
        self.metrics.seam_call(labels, started.elapsed());
        tracing::debug!(%access_code_id, %endpoint, outcome = %outcome.kind(), attempt, "fetched");
        outcome
    }

    async fn store(
        &self,
        conn: &mut PgConnection,
        claim: &Claim,
        endpoint: CodeEndpoint,
        observed: Observed<'_>,
    ) -> anyhow::Result<TaskResult> {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if !queue::lock_claim(&mut tx, claim).await? {
            tracing::warn!(access_code_id = %claim.access_code_id, "claim lost to another worker; result dropped");
            self.metrics.worker_error(WorkerError::ClaimLost);
            return Ok(TaskResult::ClaimLost);
        }
        let applied = mirror::apply(&mut tx, &fetch_of(claim, endpoint), observed, self.store_pins).await?;
        let again_after = self.settings.requested_again_delay();
        let completion = queue::complete(&mut tx, claim, again_after).await?;
        tx.commit().await?;
        if completion == Completion::RequestedAgain && !again_after.is_zero() {
            let wake = self.wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(again_after).await;
                wake.notify_one();
            });
        }
        // A backup pulled for this code that the mirror does not hold yet is fetched too.
        if matches!(observed, Observed::Found(found) if found.code.pulled_backup_access_code_id.is_some()) {
            mirror::queue_missing_backups(conn, std::slice::from_ref(&claim.access_code_id)).await?;
        }
        let lag = (chrono::Utc::now() - claim.first_requested_at).to_std().unwrap_or_default();
        self.metrics.mirror_lag.observe(lag.as_secs_f64());
        let written = match &applied {
            Applied::Stale => MirrorWrite::Stale,
            Applied::Stored { change: None, .. } => MirrorWrite::Unchanged,
            Applied::Stored { change: Some(ChangeKind::Created), .. } => MirrorWrite::Created,
            Applied::Stored { change: Some(ChangeKind::Changed), .. } => MirrorWrite::Changed,
            Applied::Stored { change: Some(ChangeKind::Deleted), .. } => MirrorWrite::Deleted,
        };
        self.metrics.mirror_changes.get_or_create(&Outcome { outcome: written }).inc();
        if let Applied::Stored { change: Some(change), previous_status, status } = &applied {
            tracing::info!(
                access_code_id = %claim.access_code_id,
                ?change,
                previous_status = previous_status.as_deref().unwrap_or(""),
                status = status.as_deref().unwrap_or(""),
                "mirror updated"
            );
        }
        Ok(TaskResult::Stored { applied, completion })
    }

    async fn fail(
        &self,
        conn: &mut PgConnection,
        claim: &Claim,
        failure: Failure,
        error: &str,
    ) -> anyhow::Result<TaskResult> {
        if !queue::fail(conn, claim, &failure, error).await? {
            self.metrics.worker_error(WorkerError::ClaimLost);
            return Ok(TaskResult::ClaimLost);
        }
        match &failure {
            Failure::DeadLetter => {
                tracing::error!(access_code_id = %claim.access_code_id, attempts = claim.attempts, %error, "re-fetch dead-lettered")
            }
            Failure::Retry { delay, .. } => {
                tracing::warn!(access_code_id = %claim.access_code_id, attempts = claim.attempts, %error, retry_in_ms = delay.as_millis() as u64, "re-fetch failed; will retry")
            }
        }
        Ok(TaskResult::Failed(failure))
    }

    fn backoff(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        backoff(&self.settings, attempt, retry_after)
    }

    /// Runs `concurrency` loops and the LISTEN task until `cancel` fires; each loop
    /// finishes its fetch in flight before it stops. Each is supervised: one that
    /// fails is started again.
    pub async fn run(self, cancel: CancellationToken) {
        let mut supervisor = Supervisor::new(cancel, self.metrics.clone());
        self.supervise(&mut supervisor);
        supervisor.wait().await;
        tracing::info!("worker stopped");
    }

    /// Adds the worker's tasks to `supervisor`: `concurrency` loops (`worker`) and the
    /// task that wakes them on NOTIFY (`worker_listener`).
    pub fn supervise(self, supervisor: &mut Supervisor) {
        let wake = self.wake.clone();
        let (pool, listener_wake) = (self.pool.clone(), wake.clone());
        supervisor
            .spawn(Task::WorkerListener, move |cancel| listen_for_work(pool.clone(), listener_wake.clone(), cancel));
        for _ in 0..self.settings.concurrency {
            let (worker, wake) = (self.clone(), wake.clone());
            supervisor.spawn(Task::Worker, move |cancel| {
                let (worker, wake) = (worker.clone(), wake.clone());
                async move {
                    let poll = worker.settings.poll_interval();
                    // The loop's own connection, kept from step to step.
                    let kept = Mutex::new(KeptConnection::new(worker.pool.clone()));
                    let step = || async {
                        // While Seam is failing, claim nothing: the queue stays as it is.
                        if let Some(breaker) = worker.workspaces.breaker() {
                            tokio::select! {
                                _ = breaker.ready() => {}
                                _ = cancel.cancelled() => return Ok(TaskOutcome::EmptyQueue),
                            }
                        }
                        worker.execute_task(&mut *kept.lock().await).await
                    };
                    work_loop(step, &wake, poll, &worker.metrics, &cancel).await
                }
            });
        }
    }
}

/// One of the worker's loops: `step` until `cancel` fires, right away again after a
/// step that executed a task, else after `poll` (±20 %) or a wake-up on `wake`.
///
/// A step that fails is logged and counted in `worker_errors_total{kind="step"}`; one
/// that panics (`supervisor::guard`) in `task_failures_total{task="worker"}`. Either
/// way the loop pauses for `poll` and goes on; a claim the failed step held is taken
/// again once its lease expires.
pub async fn work_loop<S, Fut>(
    mut step: S,
    wake: &Notify,
    poll: Duration,
    metrics: &Metrics,
    cancel: &CancellationToken,
) where
    S: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<TaskOutcome>>,
{
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cancel.is_cancelled() {
            return;
        }
        let pause = match supervisor::guard(Task::Worker, metrics, step()).await {
            Some(Ok(TaskOutcome::Executed { .. })) => continue,
            Some(Ok(TaskOutcome::EmptyQueue)) => poll.mul_f64(rand::rng().random_range(0.8..=1.2)),
            Some(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "worker step failed; pausing");
                metrics.worker_error(WorkerError::Step);
                poll
            }
            None => poll,
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(pause) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Exponential backoff with jitter (50–100 % of `base · 2^(attempt-1)`, capped);
/// a `Retry-After` from Seam is honoured within the same bounds. Backup pulls use it too.
pub fn backoff(settings: &WorkerSettings, attempt: i32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_millis(settings.backoff_base_ms);
    let max = Duration::from_millis(settings.backoff_max_ms);
    if let Some(wait) = retry_after {
        return wait.clamp(base, max);
    }
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(30);
    let full = base.saturating_mul(1 << exponent).min(max);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// What the mirror needs to know of the fetch a claim led to, answered by `endpoint`.
fn fetch_of(claim: &Claim, endpoint: CodeEndpoint) -> Fetch<'_> {
    Fetch {
        access_code_id: &claim.access_code_id,
        endpoint,
        device_id: claim.device_id.as_deref(),
        workspace_id: claim.workspace_id.as_deref(),
        connected_account_id: claim.connected_account_id.as_deref(),
        origin: Origin::Fetch,
        trigger: claim.event(),
        started_at: claim.claimed_at,
    }
}

/// Turns NOTIFYs on the refetch channel into wake-ups; polling covers the gaps
/// while the listener reconnects. Returns when `cancel` fires, whatever it is
/// waiting for (a connection to a database that is down, say).
async fn listen_for_work(pool: PgPool, wake: Arc<Notify>, cancel: CancellationToken) {
    cancel.run_until_cancelled(listen(&pool, &wake)).await;
}

async fn listen(pool: &PgPool, wake: &Notify) {
    loop {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for work; polling until it can");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(REFETCH_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything enqueued while we were not listening is found now.
        wake.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.notify_one(),
                // The connection dropped; notifications may have been lost.
                Ok(None) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}
