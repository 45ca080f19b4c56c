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

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::periodic;
use crate::config::CatchUpSettings;
use crate::seam::SeamKeyStatus;
use crate::seam::client::{EventWindow, ListError, SeamClient};
use crate::seam::event::{SeamEvent, listed_event_types, parse_time};
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
    seam: SeamClient,
    settings: CatchUpSettings,
    store_pins: bool,
    key_status: SeamKeyStatus,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Another replica holds the catch-up lock.
    Skipped,
    /// The log was read up to the time the run started (`high_water_mark`).
    Completed { found: usize, new: usize, high_water_mark: Option<DateTime<Utc>> },
    /// The run reached its page cap (`MAX_PAGES` calls): what it read is stored and the
    /// mark is at the end of its last complete window; the next run goes on from there.
    Partial { found: usize, new: usize, high_water_mark: Option<DateTime<Utc>> },
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
        seam: SeamClient,
        settings: CatchUpSettings,
        store_pins: bool,
        key_status: SeamKeyStatus,
        metrics: Arc<Metrics>,
    ) -> CatchUp {
        CatchUp { pool, seam, settings, store_pins, key_status, metrics }
    }

    /// One run, unless another replica is running one.
    pub async fn run_once(&self) -> anyhow::Result<RunOutcome> {
        let Some(lock) = RunLock::try_acquire(&self.pool, run_lock::keys::CATCH_UP).await? else {
            self.count_run(CatchUpRun::Skipped);
            return Ok(RunOutcome::Skipped);
        };
        let mut progress = Progress::default();
        let result = self.run_locked(&mut progress).await;
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
             WHERE id = 1",
            outcome as CatchUpRun,
            progress.found as i32,
            progress.new as i32,
            error,
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

    async fn run_locked(&self, progress: &mut Progress) -> anyhow::Result<RunOutcome> {
        let mark: Option<DateTime<Utc>> =
            sqlx::query_scalar!("SELECT high_water_mark FROM catch_up_state WHERE id = 1")
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
            let batch = match self.seam.list_events(window, &types, limit as u32).await {
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
                    self.key_status.rejected(format!("HTTP {status}: {message}"));
                    anyhow::bail!("Seam rejected the API key: HTTP {status}: {message}");
                }
                Err(ListError::Failed(reason)) => anyhow::bail!("/events/list failed: {reason}"),
            };
            self.key_status.accepted();
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
            self.store_window(progress, &batch).await?;
            sqlx::query!(
                "UPDATE catch_up_state SET high_water_mark = GREATEST(high_water_mark, $1), updated_at = now()
                 WHERE id = 1",
                done,
            )
            .execute(&self.pool)
            .await?;
            progress.mark = progress.mark.max(Some(done));
            start = done;
        }
        if progress.new > 0 {
            tracing::info!(found = progress.found, new = progress.new, "catch-up found events no webhook delivered");
        }
        let Progress { found, new, mark, .. } = *progress;
        Ok(RunOutcome::Completed { found, new, high_water_mark: mark })
    }

    /// Stores one complete window's events in one transaction (each once, by
    /// `event_id`, and queued as a webhook's would be).
    async fn store_window(&self, progress: &mut Progress, batch: &[Value]) -> anyhow::Result<()> {
        let mut events = Vec::with_capacity(batch.len());
        for raw in batch {
            match SeamEvent::parse(&serde_json::to_vec(raw)?, self.store_pins) {
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

    /// Runs at start, then every `interval_seconds`, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        periodic::every(Task::CatchUp, &self.metrics, self.settings.interval_seconds, shutdown, || async {
            match self.run_once().await {
                Ok(outcome) => tracing::debug!(?outcome, "catch-up run"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "catch-up run failed; will try again"),
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
