//! Backup access codes: decide to pull (`backup.pull_on_failure`, or by hand) and
//! pull, exactly once per code.
//!
//! A pull is recorded before and after the call (`store::backup`): `decided` →
//! `sending` (committed before the call) → `pulled` | `failed`. A row found in
//! `sending` (a process killed mid-call, a lost answer, a 5xx) may have been pulled
//! by Seam already: the code is fetched again first, and a
//! `pulled_backup_access_code_id` there ends the pull without a second call. Rows
//! are claimed like the re-fetch queue, so two workers or replicas never pull for
//! the same code at once; 429, 5xx and no answer are retried with the worker's
//! backoff, 4xx are not (Seam's reason is kept and shown by `status`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{BackupSettings, WorkerSettings};
use crate::seam::client::{FetchOutcome, FetchedCode};
use crate::seam::event::CodeEndpoint;
use crate::seam::workspaces::{Route, Workspace, Workspaces};
use crate::store::backup::{self, PullClaim, PullState};
use crate::store::mirror::{self, Fetch, Observed, Origin};
use crate::store::queue::{self, RefetchRequest};
use crate::telemetry::metrics::{BackupPullOutcome, Metrics, SeamLabels};

#[derive(Clone)]
pub struct BackupPuller {
    pool: PgPool,
    workspaces: Workspaces,
    worker: WorkerSettings,
    backup: BackupSettings,
    store_pins: bool,
    metrics: Arc<Metrics>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum PullStep {
    /// No pull is due (or the one asked for is claimed elsewhere, or not due yet).
    Idle,
    Done {
        access_code_id: String,
        result: PullResult,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum PullResult {
    /// Seam answered with this backup code (mirrored now).
    Pulled(Box<FetchedCode>),
    /// The code already had this backup (an earlier call's answer was lost): no call.
    Recovered { backup_access_code_id: String },
    /// Failed for good: Seam refused (4xx), the code is gone, or retries ran out.
    Failed { error: String },
    /// Tried again after `delay`.
    Retry { delay: Duration, error: String },
    /// Another worker took the claim over.
    ClaimLost,
}

impl BackupPuller {
    pub fn new(
        pool: PgPool,
        workspaces: Workspaces,
        worker: WorkerSettings,
        backup: BackupSettings,
        store_pins: bool,
        metrics: Arc<Metrics>,
    ) -> BackupPuller {
        BackupPuller { pool, workspaces, worker, backup, store_pins, metrics }
    }

    /// With `backup.pull_on_failure`: records a decision for every code that needs
    /// a backup now. Returns how many.
    pub async fn decide(&self) -> sqlx::Result<usize> {
        if !self.backup.pull_on_failure {
            return Ok(0);
        }
        let decided = backup::decide_due(&self.pool, self.backup.pull_after_seconds).await?;
        for (access_code_id, reason) in &decided {
            tracing::info!(%access_code_id, %reason, "pulling a backup access code");
        }
        Ok(decided.len())
    }

    /// Claims one due pull (`only`: that code's) and makes it.
    pub async fn try_pull_next(&self, only: Option<&str>) -> anyhow::Result<PullStep> {
        let filter = self.workspaces.claim_filter();
        let Some(claim) = backup::claim_next(&self.pool, self.worker.lease(), &filter, only).await? else {
            return Ok(PullStep::Idle);
        };
        let result = self.execute(&claim).await?;
        Ok(PullStep::Done { access_code_id: claim.access_code_id, result })
    }

    /// Decides and pulls until nothing is due; what each step did. Tests drive it.
    pub async fn drain(&self) -> anyhow::Result<Vec<PullStep>> {
        self.decide().await?;
        let mut steps = Vec::new();
        loop {
            match self.try_pull_next(None).await? {
                PullStep::Idle => return Ok(steps),
                step => steps.push(step),
            }
        }
    }

    async fn execute(&self, claim: &PullClaim) -> anyhow::Result<PullResult> {
        let Route::Fetch(workspace) = self.workspaces.route(claim.workspace_id.as_deref()) else {
            let error = format!(
                "no configured workspace serves workspace {}",
                claim.workspace_id.as_deref().unwrap_or("(none named)")
            );
            let delay = Duration::from_secs(self.worker.auth_failure_retry_seconds);
            return self.retry(claim, delay, false, error).await;
        };
        if claim.state == PullState::Sending {
            // The last call may have reached Seam: look before calling again.
            let started = std::time::Instant::now();
            let outcome = workspace.client.get_access_code(&claim.access_code_id, CodeEndpoint::Managed).await;
            self.count_fetch(workspace, &outcome, started.elapsed());
            match outcome {
                FetchOutcome::Found(found) => {
                    workspace.key_status.accepted();
                    if let Some(backup) = found.code.pulled_backup_access_code_id.clone() {
                        return self.recovered(claim, &found, backup).await;
                    }
                    tracing::info!(access_code_id = %claim.access_code_id, "no backup pulled by the last call; calling again");
                }
                FetchOutcome::Gone => {
                    return self.failed(claim, BackupPullOutcome::Gone, "the code no longer exists (HTTP 404)").await;
                }
                other => return self.call_failed(workspace, claim, other).await,
            }
        }
        if !backup::mark_sending(&self.pool, claim).await? {
            return Ok(PullResult::ClaimLost);
        }
        match workspace.client.pull_backup_access_code(&claim.access_code_id).await {
            FetchOutcome::Found(backup) => {
                workspace.key_status.accepted();
                self.pulled(claim, backup).await
            }
            other => self.call_failed(workspace, claim, other).await,
        }
    }

    /// Seam answered with the backup: recorded, the backup mirrored, the original
    /// fetched again (its history says `backup_pulled`).
    async fn pulled(&self, claim: &PullClaim, backup: Box<FetchedCode>) -> anyhow::Result<PullResult> {
        let backup_id = backup.code.access_code_id.clone();
        let mut tx = crate::store::begin(&self.pool).await?;
        if !backup::lock_claim(&mut tx, claim).await? {
            return Ok(PullResult::ClaimLost);
        }
        backup::finish(&mut tx, claim, Ok(&backup_id)).await?;
        let fetch = Fetch {
            access_code_id: &backup_id,
            endpoint: CodeEndpoint::Managed,
            device_id: backup.code.device_id.as_deref(),
            workspace_id: backup.code.workspace_id.as_deref().or(claim.workspace_id.as_deref()),
            connected_account_id: None,
            origin: Origin::Fetch,
            trigger: Default::default(),
            started_at: claim.claimed_at,
        };
        mirror::apply(&mut tx, &fetch, Observed::Found(&backup), self.store_pins).await?;
        mirror::link_pulled_backup(&mut tx, &claim.access_code_id, &backup_id).await?;
        tx.commit().await?;
        self.metrics.backup_pull(BackupPullOutcome::Pulled);
        tracing::info!(access_code_id = %claim.access_code_id, backup_access_code_id = %backup_id, "backup access code pulled");
        let request = RefetchRequest {
            access_code_id: &claim.access_code_id,
            endpoint: CodeEndpoint::Managed,
            device_id: backup.code.device_id.as_deref(),
            workspace_id: claim.workspace_id.as_deref(),
            connected_account_id: None,
            event: None,
            requests: 1,
        };
        queue::enqueue(&mut *self.pool.acquire().await?, &request).await?;
        Ok(PullResult::Pulled(backup))
    }

    /// The code shows the backup an earlier call pulled: recorded without a call.
    async fn recovered(&self, claim: &PullClaim, original: &FetchedCode, backup: String) -> anyhow::Result<PullResult> {
        let mut tx = crate::store::begin(&self.pool).await?;
        if !backup::lock_claim(&mut tx, claim).await? {
            return Ok(PullResult::ClaimLost);
        }
        backup::finish(&mut tx, claim, Ok(&backup)).await?;
        let fetch = Fetch {
            access_code_id: &claim.access_code_id,
            endpoint: CodeEndpoint::Managed,
            device_id: original.code.device_id.as_deref(),
            workspace_id: original.code.workspace_id.as_deref().or(claim.workspace_id.as_deref()),
            connected_account_id: None,
            origin: Origin::Fetch,
            trigger: Default::default(),
            started_at: claim.claimed_at,
        };
        mirror::apply(&mut tx, &fetch, Observed::Found(original), self.store_pins).await?;
        tx.commit().await?;
        mirror::queue_missing_backups(&mut *self.pool.acquire().await?, std::slice::from_ref(&claim.access_code_id))
            .await?;
        self.metrics.backup_pull(BackupPullOutcome::Recovered);
        tracing::info!(access_code_id = %claim.access_code_id, backup_access_code_id = %backup, "backup access code found pulled by an earlier call");
        Ok(PullResult::Recovered { backup_access_code_id: backup })
    }

    /// A call that did not give the backup: retried (429, 5xx, no answer, a
    /// rejected key), or failed for good (any other 4xx).
    async fn call_failed(
        &self,
        workspace: &Workspace,
        claim: &PullClaim,
        outcome: FetchOutcome,
    ) -> anyhow::Result<PullResult> {
        match outcome {
            FetchOutcome::Transient { reason, retry_after, .. } => {
                if claim.attempts >= self.worker.max_attempts {
                    let error = format!("gave up after {} attempts: {reason}", claim.attempts);
                    return self.failed(claim, BackupPullOutcome::GaveUp, &error).await;
                }
                let delay = crate::jobs::worker::backoff(&self.worker, claim.attempts, retry_after);
                self.retry(claim, delay, true, reason).await
            }
            // Seam is failing (the breaker is open): wait for it without spending an attempt.
            FetchOutcome::NotCalled { reason, retry_in } => self.retry(claim, retry_in, false, reason).await,
            FetchOutcome::KeyRejected { status, message } => {
                workspace.key_status.rejected(format!("HTTP {status}: {message}"));
                let delay = Duration::from_secs(self.worker.auth_failure_retry_seconds);
                self.retry(claim, delay, false, format!("API key rejected: HTTP {status}: {message}")).await
            }
            FetchOutcome::Rejected { status, message } => {
                self.failed(claim, BackupPullOutcome::Rejected, &format!("HTTP {status}: {message}")).await
            }
            FetchOutcome::Gone => self.failed(claim, BackupPullOutcome::Gone, "HTTP 404").await,
            FetchOutcome::Found(_) => unreachable!("a found answer is handled by the caller"),
        }
    }

    async fn retry(
        &self,
        claim: &PullClaim,
        delay: Duration,
        counts: bool,
        error: String,
    ) -> anyhow::Result<PullResult> {
        if !backup::retry(&self.pool, claim, delay, counts, &error).await? {
            return Ok(PullResult::ClaimLost);
        }
        self.metrics.backup_pull(BackupPullOutcome::Retried);
        tracing::warn!(access_code_id = %claim.access_code_id, attempts = claim.attempts, %error, retry_in_ms = delay.as_millis() as u64, "backup pull failed; will retry");
        Ok(PullResult::Retry { delay, error })
    }

    async fn failed(&self, claim: &PullClaim, outcome: BackupPullOutcome, error: &str) -> anyhow::Result<PullResult> {
        let mut tx = crate::store::begin(&self.pool).await?;
        if !backup::lock_claim(&mut tx, claim).await? {
            return Ok(PullResult::ClaimLost);
        }
        backup::finish(&mut tx, claim, Err(error)).await?;
        tx.commit().await?;
        self.metrics.backup_pull(outcome);
        tracing::error!(access_code_id = %claim.access_code_id, %error, "backup pull failed");
        Ok(PullResult::Failed { error: error.to_owned() })
    }

    fn count_fetch(&self, workspace: &Workspace, outcome: &FetchOutcome, elapsed: Duration) {
        let labels = SeamLabels {
            endpoint: CodeEndpoint::Managed,
            outcome: outcome.kind(),
            status: outcome.status().map_or_else(|| "none".to_owned(), |s| s.to_string()),
            workspace: self.workspaces.metric_label(workspace),
        };
        self.metrics.seam_call(labels, elapsed);
    }

    /// Decides and pulls every `worker.poll_interval_ms` until `cancel` fires; a
    /// pull in progress is finished first. Pulls decided by hand are made whether or
    /// not `backup.pull_on_failure` is on.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.decide().await {
                tracing::warn!(error = %e, "deciding backup pulls failed; will try again");
            }
            while !cancel.is_cancelled() {
                match self.try_pull_next(None).await {
                    Ok(PullStep::Idle) => break,
                    Ok(PullStep::Done { .. }) => {}
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "backup pull step failed; will try again");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.worker.poll_interval()) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
