//! Catch-up from Seam's event log: webhooks give up after about 28 hours (and never
//! arrive while a secret is wrong), `/events/list` does not. Each run reads the events
//! of the types the service acts on (`listed_event_types`) created since the mark (less
//! an overlap) and feeds them into the same pipeline as webhooks: deduplicated by
//! `event_id`, coalesced into re-fetches.
//!
//! It walks forward in time, one window at a time. A full answer (`page_limit` events)
//! may have left events out, so its window is halved until answers are short; each
//! complete window's events are stored and the mark moves to the window's end, so a
//! run that stops (at its page cap, or on an error) keeps what it read and the next run
//! goes on from there: a busy log takes several runs, never the same window forever.
//!
//! Per workspace: each configured workspace's log is read with its own credential,
//! with its own state (a `catch_up_state` row keyed by the workspace id, or '' for
//! the single-key setup while its workspace is unknown) and its own run lock, so two
//! replicas never read one workspace's log at once while different workspaces' runs
//! go side by side. A workspace whose id is not known yet is skipped until it is (its
//! codes wait in the queue too). One workspace's failure (a revoked key, Seam
//! refusing) is recorded on its row and leaves the others to run.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{periodic, supervisor};
use crate::config::CatchUpSettings;
use crate::seam::client::{EventWindow, ListError};
use crate::seam::event::{SeamEvent, listed_event_types, parse_time};
use crate::seam::workspaces::{JobScope, Workspace, Workspaces};
use crate::store::intake::{self, Incoming, Stored};
use crate::store::run_lock::{self, RunLock};
use crate::telemetry::metrics::{CatchUpEvent, CatchUpRun, KindLabel, Metrics, Task};

/// Upper bound on `/events/list` calls in one run. A run that reaches it ends with its
/// progress saved (a partial run); the next run goes on from the mark.
pub const MAX_PAGES: usize = 200;

/// The finest split of a window: Seam's times are in milliseconds.
fn tick() -> Duration {
    Duration::milliseconds(1)
}

#[derive(Clone)]
pub struct CatchUp {
    pool: PgPool,
    workspaces: Workspaces,
    settings: CatchUpSettings,
    store_pins: bool,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Another replica holds this workspace's catch-up lock.
    Skipped,
    /// The log was read up to the time the run started (`high_water_mark`).
    Completed { found: usize, new: usize, high_water_mark: Option<DateTime<Utc>> },
    /// The run reached its page cap (`MAX_PAGES` calls): what it read is stored and the
    /// mark is at the end of its last complete window; the next run goes on from there.
    Partial { found: usize, new: usize, high_water_mark: Option<DateTime<Utc>> },
}

/// One workspace's run in a pass over every workspace (`run_all`).
#[derive(Debug)]
pub struct WorkspaceRun {
    /// The workspace's entry label.
    pub label: String,
    /// Its state key (`catch_up_state.workspace_key`).
    pub key: String,
    /// `None`: the run panicked (logged and counted).
    pub result: Option<anyhow::Result<RunOutcome>>,
}

/// What a run has done so far, kept when it fails half-way.
#[derive(Debug, Default)]
struct Progress {
    found: usize,
    new: usize,
    pages: usize,
    mark: Option<DateTime<Utc>>,
}

impl CatchUp {
    pub fn new(
        pool: PgPool,
        workspaces: Workspaces,
        settings: CatchUpSettings,
        store_pins: bool,
        metrics: Arc<Metrics>,
    ) -> CatchUp {
        CatchUp { pool, workspaces, settings, store_pins, metrics }
    }

    /// One run for each workspace whose id is known (or the only one), in turn; a
    /// workspace's failure, or panic, is its own and the next one runs.
    pub async fn run_all(&self) -> Vec<WorkspaceRun> {
        let mut runs = Vec::new();
        for index in 0..self.workspaces.all().len() {
            let Some(scope) = self.workspaces.scope(index) else {
                let label = &self.workspaces.all()[index].label;
                tracing::debug!(workspace = %label, "catch-up: the workspace is not known yet; skipped");
                continue;
            };
            let result = supervisor::guard(Task::CatchUp, &self.metrics, self.run_scope(index, &scope)).await;
            runs.push(WorkspaceRun { label: scope.label, key: scope.key, result });
        }
        runs
    }

    /// One run for the `index`th workspace, unless another replica is running its
    /// catch-up. Fails when its id is not known yet (and it is not the only one).
    pub async fn run_workspace(&self, index: usize) -> anyhow::Result<RunOutcome> {
        let label = self.workspaces.all().get(index).map(|w| w.label.clone());
        let label = label.ok_or_else(|| anyhow::anyhow!("no workspace {index}"))?;
        let scope = self
            .workspaces
            .scope(index)
            .ok_or_else(|| anyhow::anyhow!("{label}: Seam has not said which workspace it is yet"))?;
        self.run_scope(index, &scope).await
    }

    async fn run_scope(&self, index: usize, scope: &JobScope) -> anyhow::Result<RunOutcome> {
        let workspace = &self.workspaces.all()[index];
        let lock_key = run_lock::keys::of_workspace(run_lock::keys::CATCH_UP, &scope.key);
        let Some(lock) = RunLock::try_acquire(&self.pool, lock_key).await? else {
            self.count_run(CatchUpRun::Skipped);
            return Ok(RunOutcome::Skipped);
        };
        let mut progress = Progress::default();
        let result = match self.prepare_state(scope).await {
            Ok(()) => self.run_locked(workspace, scope, &mut progress).await,
            Err(e) => Err(e.into()),
        };
        lock.release().await;
        let (outcome, error) = match &result {
            Ok(RunOutcome::Partial { .. }) => (CatchUpRun::Partial, None),
            Ok(_) => (CatchUpRun::Completed, None),
            Err(e) => (CatchUpRun::Failed, Some(format!("{e:#}"))),
        };
        self.count_run(outcome);
        let recorded = sqlx::query!(
            "UPDATE catch_up_state SET last_run_at = now(), last_outcome = $1,
                 last_success_at = CASE WHEN $1 = 'completed' THEN now() ELSE last_success_at END,
                 last_events_found = $2, last_events_new = $3, last_error = $4, updated_at = now()
             WHERE workspace_key = $5",
            outcome as CatchUpRun,
            progress.found as i32,
            progress.new as i32,
            error,
            scope.key,
        )
        .execute(&self.pool)
        .await;
        match (result, recorded) {
            (Ok(outcome), Err(e)) => {
                Err(anyhow::Error::new(e).context(format!("recording the catch-up run ({outcome:?})")))
            }
            (result, _) => result,
        }
    }

    /// The workspace's state row: the one from before workspaces when the first
    /// workspace's id becomes known (its mark is kept), else a new one.
    async fn prepare_state(&self, scope: &JobScope) -> sqlx::Result<()> {
        if scope.adopts_legacy {
            let adopted = sqlx::query!(
                "UPDATE catch_up_state SET workspace_key = $1, updated_at = now()
                 WHERE workspace_key = '' AND NOT EXISTS (SELECT 1 FROM catch_up_state WHERE workspace_key = $1)",
                scope.key,
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            if adopted > 0 {
                tracing::info!(workspace = %scope.label, workspace_id = %scope.key, "catch-up: this workspace takes over the catch-up state from before workspaces");
            }
        }
        sqlx::query!(
            "INSERT INTO catch_up_state (workspace_key, workspace_label) VALUES ($1, $2)
             ON CONFLICT (workspace_key) DO UPDATE SET workspace_label = EXCLUDED.workspace_label
             WHERE catch_up_state.workspace_label IS DISTINCT FROM EXCLUDED.workspace_label",
            scope.key,
            scope.label,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn run_locked(
        &self,
        workspace: &Workspace,
        scope: &JobScope,
        progress: &mut Progress,
    ) -> anyhow::Result<RunOutcome> {
        let mark: Option<DateTime<Utc>> =
            sqlx::query_scalar!("SELECT high_water_mark FROM catch_up_state WHERE workspace_key = $1", scope.key)
                .fetch_one(&self.pool)
                .await?;
        progress.mark = mark;
        let end = to_millis(Utc::now());
        let from = match mark {
            Some(mark) => mark - Duration::seconds(self.settings.overlap_seconds as i64),
            None => end - Duration::hours(self.settings.initial_lookback_hours as i64),
        };
        let types = listed_event_types();
        let limit = self.settings.page_limit as usize;
        let mut start = to_millis(from);
        // The span asked for next: halved after a full answer, sized after a short one
        // to hold about half a page at the density it showed.
        let mut span = end - start;
        while start < end {
            if progress.pages == MAX_PAGES {
                tracing::warn!(
                    workspace = %scope.label,
                    pages = MAX_PAGES,
                    high_water_mark = ?progress.mark,
                    "catch-up: stopping at the page cap with its progress saved; the next run goes on from the mark"
                );
                let Progress { found, new, mark, .. } = *progress;
                return Ok(RunOutcome::Partial { found, new, high_water_mark: mark });
            }
            progress.pages += 1;
            let window_end = (start + span).min(end);
            // `between` excludes both ends: from a tick before `start`, so that an event
            // at `start` is read (again: the last window ended there, exclusive).
            let window = EventWindow::Between(start - tick(), window_end);
            let batch = match workspace.client.list_events(window, &types, limit as u32).await {
                Ok(batch) => batch,
                Err(e @ ListError::TooLarge { .. }) => {
                    anyhow::ensure!(
                        window_end - start > tick(),
                        "/events/list failed: {e}, even for a window of a few milliseconds"
                    );
                    tracing::warn!(%start, "catch-up: an /events/list page over seam.max_response_bytes; splitting its window");
                    span = half(window_end - start);
                    continue;
                }
                Err(ListError::KeyRejected { status, message }) => {
                    workspace.key_status.rejected(format!("HTTP {status}: {message}"));
                    anyhow::bail!("Seam rejected the API key: HTTP {status}: {message}");
                }
                Err(ListError::Failed(reason)) => anyhow::bail!("/events/list failed: {reason}"),
            };
            workspace.key_status.accepted();
            let mut done = window_end;
            if batch.len() >= limit {
                let times: Vec<DateTime<Utc>> = batch.iter().filter_map(created_at).collect();
                let (Some(&earliest), Some(&latest)) = (times.iter().min(), times.iter().max()) else {
                    anyhow::bail!("/events/list returned a full page without created_at times");
                };
                let one_time = earliest == latest;
                if window_end - start <= tick() || (one_time && earliest < start + tick()) {
                    // Nothing smaller to ask for: take the page and go on.
                    tracing::warn!(%earliest, "catch-up: more than page_limit events share one time; some may be missed");
                    done = (start + tick()).min(window_end);
                } else {
                    // All at one later time: everything before it first, then it alone.
                    span = if one_time { to_millis(earliest) - start } else { half(window_end - start) };
                    continue;
                }
            } else {
                span = next_span(window_end - start, batch.len(), limit);
            }
            self.store_window(scope, progress, &batch).await?;
            sqlx::query!(
                "UPDATE catch_up_state SET high_water_mark = GREATEST(high_water_mark, $1), updated_at = now()
                 WHERE workspace_key = $2",
                done,
                scope.key,
            )
            .execute(&self.pool)
            .await?;
            progress.mark = progress.mark.max(Some(done));
            start = done;
        }
        if progress.new > 0 {
            tracing::info!(workspace = %scope.label, found = progress.found, new = progress.new, "catch-up found events no webhook delivered");
        }
        let Progress { found, new, mark, .. } = *progress;
        Ok(RunOutcome::Completed { found, new, high_water_mark: mark })
    }

    /// Stores one complete window's events in one transaction (each once, by
    /// `event_id`, and queued as a webhook's would be). Each keeps the
    /// `workspace_id` Seam listed it with; one listed without gets the workspace's.
    async fn store_window(&self, scope: &JobScope, progress: &mut Progress, batch: &[Value]) -> anyhow::Result<()> {
        let mut events = Vec::with_capacity(batch.len());
        for raw in batch {
            let unnamed = raw.get("workspace_id").is_none_or(Value::is_null);
            let raw = match (&scope.workspace_id, raw) {
                (Some(id), Value::Object(fields)) if unnamed => {
                    let mut fields = fields.clone();
                    fields.insert("workspace_id".into(), Value::String(id.clone()));
                    Value::Object(fields)
                }
                _ => raw.clone(),
            };
            match SeamEvent::parse(&serde_json::to_vec(&raw)?, self.store_pins) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up: skipping an event Seam listed that is not a valid event")
                }
            }
        }
        let incoming: Vec<Incoming> = events.iter().map(|event| Incoming { delivery_id: None, event }).collect();
        let stored = intake::store_events(&self.pool, &incoming).await?;
        let new = stored.iter().filter(|s| **s == Stored::New).count();
        progress.found += stored.len();
        progress.new += new;
        self.metrics.catch_up_events.get_or_create(&KindLabel { kind: CatchUpEvent::New }).inc_by(new as u64);
        self.metrics
            .catch_up_events
            .get_or_create(&KindLabel { kind: CatchUpEvent::Seen })
            .inc_by((stored.len() - new) as u64);
        Ok(())
    }

    fn count_run(&self, outcome: CatchUpRun) {
        self.metrics.catch_up_runs.get_or_create(&KindLabel { kind: outcome }).inc();
    }

    /// Runs every workspace's catch-up at start, then every `interval_seconds`,
    /// until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        periodic::every(Task::CatchUp, &self.metrics, self.settings.interval_seconds, shutdown, || async {
            for run in self.run_all().await {
                match run.result {
                    Some(Ok(outcome)) => tracing::debug!(workspace = %run.label, ?outcome, "catch-up run"),
                    Some(Err(e)) => tracing::warn!(
                        workspace = %run.label,
                        error = format!("{e:#}"),
                        "catch-up run failed; will try again"
                    ),
                    None => {}
                }
            }
        })
        .await;
    }
}

/// The span to ask for after a short answer of `count` events for a window of
/// `span`: about half a page at that density, at most eight times as long (a quiet
/// stretch says little about the next one), in whole milliseconds.
fn next_span(span: Duration, count: usize, limit: usize) -> Duration {
    let span = span.num_milliseconds().max(1);
    let target = (limit as i64 / 2).max(1);
    let sized = span.saturating_mul(target) / (count as i64).max(1);
    Duration::milliseconds(sized.clamp(1, span.saturating_mul(8)))
}

/// Half of a window's span, in whole milliseconds, at least one.
fn half(span: Duration) -> Duration {
    Duration::milliseconds((span.num_milliseconds() / 2).max(1))
}

/// `time` without its sub-millisecond part.
fn to_millis(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(tick()).unwrap_or(time)
}

fn created_at(event: &Value) -> Option<DateTime<Utc>> {
    event.get("created_at").and_then(Value::as_str).and_then(parse_time)
}
