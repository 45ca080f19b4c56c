//! Catch-up from Seam's event log: webhooks give up after about 28 hours (and never
//! arrive while a secret is wrong), `/events/list` does not. Each run reads the
//! `access_code.*` events created since the newest one seen (less an overlap) and
//! feeds them into the same pipeline as webhooks: deduplicated by `event_id`,
//! coalesced into re-fetches.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::periodic;
use crate::config::CatchUpSettings;
use crate::seam::SeamKeyStatus;
use crate::seam::client::{EventWindow, ListError, SeamClient};
use crate::seam::event::{SeamEvent, parse_time, refetch_endpoint};
use crate::store::intake::{self, Stored};
use crate::store::run_lock::{self, RunLock};
use crate::telemetry::metrics::{CatchUpEvent, CatchUpRun, KindLabel, Metrics, Task};

/// Upper bound on `/events/list` calls in one run.
const MAX_PAGES: usize = 200;

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
    Completed {
        found: usize,
        new: usize,
        high_water_mark: Option<DateTime<Utc>>,
    },
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
        let result = self.run_locked().await;
        lock.release().await;
        match &result {
            Ok(_) => self.count_run(CatchUpRun::Completed),
            Err(e) => {
                self.count_run(CatchUpRun::Failed);
                let _ = sqlx::query!(
                    "UPDATE catch_up_state SET last_run_at = now(), last_error = $1, updated_at = now() WHERE id = 1",
                    format!("{e:#}"),
                )
                .execute(&self.pool)
                .await;
            }
        }
        result
    }

    async fn run_locked(&self) -> anyhow::Result<RunOutcome> {
        let mark: Option<DateTime<Utc>> =
            sqlx::query_scalar!("SELECT high_water_mark FROM catch_up_state WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let since = match mark {
            Some(mark) => mark - chrono::Duration::seconds(self.settings.overlap_seconds as i64),
            None => Utc::now() - chrono::Duration::hours(self.settings.initial_lookback_hours as i64),
        };
        let events = self.fetch_since(since).await?;
        let (mut found, mut new, mut newest) = (0, 0, mark);
        for raw in &events {
            newest = newest.max(created_at(raw));
            if raw.get("event_type").and_then(Value::as_str).and_then(refetch_endpoint).is_none() {
                continue;
            }
            found += 1;
            let event = match SeamEvent::parse(&serde_json::to_vec(raw)?, self.store_pins) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up: skipping an event Seam listed that is not a valid event");
                    continue;
                }
            };
            if intake::store_event(&self.pool, None, &event).await? == Stored::New {
                new += 1;
            }
        }
        self.metrics.catch_up_events.get_or_create(&KindLabel { kind: CatchUpEvent::New }).inc_by(new as u64);
        self.metrics
            .catch_up_events
            .get_or_create(&KindLabel { kind: CatchUpEvent::Seen })
            .inc_by((found - new) as u64);
        sqlx::query!(
            "UPDATE catch_up_state SET high_water_mark = $1, last_run_at = now(), last_success_at = now(),
                 last_events_found = $2, last_events_new = $3, last_error = NULL, updated_at = now()
             WHERE id = 1",
            newest,
            found as i32,
            new as i32,
        )
        .execute(&self.pool)
        .await?;
        if new > 0 {
            tracing::info!(found, new, "catch-up found events no webhook delivered");
        }
        Ok(RunOutcome::Completed { found, new, high_water_mark: newest })
    }

    /// Every event created after `since`. A full page may have left events out at
    /// either end (the order Seam lists in is not promised), so the window is split
    /// around what came back until every answer is short of the limit. A page over
    /// `seam.max_response_bytes` is asked for again as two halves of its window.
    async fn fetch_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<Value>> {
        let limit = self.settings.page_limit;
        let mut windows = vec![EventWindow::Since(since)];
        let mut events = Vec::new();
        let mut pages = 0;
        while let Some(window) = windows.pop() {
            pages += 1;
            anyhow::ensure!(pages <= MAX_PAGES, "more than {MAX_PAGES} pages of events; raise catch_up.page_limit");
            let tick = chrono::Duration::milliseconds(1);
            let batch = match self.seam.list_events(window, limit).await {
                Ok(batch) => batch,
                Err(e @ ListError::TooLarge { .. }) => {
                    let (start, end) = match window {
                        EventWindow::Since(start) => (start, None),
                        EventWindow::Between(start, end) => (start, Some(end)),
                    };
                    let half = (end.unwrap_or_else(Utc::now) - start) / 2;
                    anyhow::ensure!(half > tick, "/events/list failed: {e}, even for a window of a few milliseconds");
                    tracing::warn!(%start, "catch-up: an /events/list page over seam.max_response_bytes; splitting its window");
                    let middle = start + half;
                    windows.push(EventWindow::Between(start, middle + tick));
                    windows.push(match end {
                        None => EventWindow::Since(middle - tick),
                        Some(end) => EventWindow::Between(middle - tick, end),
                    });
                    continue;
                }
                Err(ListError::KeyRejected { status, message }) => {
                    self.key_status.rejected(format!("HTTP {status}: {message}"));
                    anyhow::bail!("Seam rejected the API key: HTTP {status}: {message}");
                }
                Err(ListError::Failed(reason)) => anyhow::bail!("/events/list failed: {reason}"),
            };
            self.key_status.accepted();
            if batch.len() >= limit as usize {
                let times: Vec<DateTime<Utc>> = batch.iter().filter_map(created_at).collect();
                let (Some(&earliest), Some(&latest)) = (times.iter().min(), times.iter().max()) else {
                    anyhow::bail!("/events/list returned a full page without created_at times");
                };
                let (start, end) = match window {
                    EventWindow::Since(start) => (start, None),
                    EventWindow::Between(start, end) => (start, Some(end)),
                };
                if earliest == latest {
                    tracing::warn!(%earliest, "catch-up: more than page_limit events share one time; some may be missed");
                } else {
                    windows.push(EventWindow::Between(start, earliest + tick));
                    windows.push(match end {
                        None => EventWindow::Since(latest - tick),
                        Some(end) => EventWindow::Between(latest - tick, end),
                    });
                }
            }
            events.extend(batch);
        }
        Ok(events)
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

fn created_at(event: &Value) -> Option<DateTime<Utc>> {
    event.get("created_at").and_then(Value::as_str).and_then(parse_time)
}
