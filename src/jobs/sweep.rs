//! Sweeps of the mirror itself: codes that no event will refresh in time.
//! - stuck in `setting`, `removing` or `unknown`: re-fetched once their last fetch is
//!   `stuck_after_seconds` old, then at intervals of half their time stuck (capped), so
//!   a code stuck for days costs a call every few hours, not every sweep;
//! - time-bound codes: re-fetched `time_bound_grace_seconds` after `starts_at` and after
//!   `ends_at`, when Seam changes them whether or not an event arrives;
//! - settled codes (every other code that exists): re-fetched once their last fetch is
//!   `settled_interval_seconds` old, so that a code on a lock that went quiet does not
//!   keep a clean mirror for ever; spread out, each sweep queuing its share of them
//!   (`store::sweep::settled_due`), a steady trickle of calls rather than a burst.

use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::periodic;
use crate::config::SweepSettings;
use crate::store::queue::{self, RefetchRequest};
use crate::store::sweep::{self, SweepKind};
use crate::telemetry::metrics::{KindLabel, Metrics, Task};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    pub stuck: usize,
    pub time_bound: usize,
    pub settled: usize,
}

/// Queues a re-fetch of every code that needs one (of the settled ones, this sweep's
/// share); codes already queued are left alone.
pub async fn sweep_once(pool: &PgPool, settings: &SweepSettings) -> sqlx::Result<SweepReport> {
    let mut report = SweepReport::default();
    // Stuck and time-bound first: the settled ones are chosen among the codes not queued.
    for due in [sweep::due(pool, settings).await?, sweep::settled_due(pool, settings).await?] {
        for code in &due {
            match code.kind {
                SweepKind::Stuck => report.stuck += 1,
                SweepKind::TimeBound => report.time_bound += 1,
                SweepKind::Settled => report.settled += 1,
            }
        }
        enqueue(pool, &due).await?;
    }
    Ok(report)
}

async fn enqueue(pool: &PgPool, due: &[sweep::Due]) -> sqlx::Result<()> {
    if due.is_empty() {
        return Ok(());
    }
    let requests: Vec<RefetchRequest> = due
        .iter()
        .map(|code| RefetchRequest {
            access_code_id: &code.access_code_id,
            endpoint: code.endpoint,
            device_id: code.device_id.as_deref(),
            workspace_id: code.workspace_id.as_deref(),
            connected_account_id: None,
            event: None,
            requests: 1,
        })
        .collect();
    let mut conn = pool.acquire().await?;
    queue::enqueue_all(&mut conn, &requests).await
}

/// Sweeps every `interval_seconds` until shutdown.
pub async fn run(pool: PgPool, settings: SweepSettings, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    periodic::every(Task::Sweep, &metrics, settings.interval_seconds, shutdown, || async {
        match sweep_once(&pool, &settings).await {
            Ok(report) => {
                for (kind, count) in [
                    (SweepKind::Stuck, report.stuck),
                    (SweepKind::TimeBound, report.time_bound),
                    (SweepKind::Settled, report.settled),
                ] {
                    metrics.sweep_refetches.get_or_create(&KindLabel { kind }).inc_by(count as u64);
                }
                if report.stuck + report.time_bound > 0 {
                    tracing::info!(stuck = report.stuck, time_bound = report.time_bound, "sweep queued re-fetches");
                }
                if report.settled > 0 {
                    tracing::debug!(settled = report.settled, "sweep queued re-fetches of settled codes");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed; will try again"),
        }
    })
    .await;
}
