//! Pruning: deletes stored events older than `retention.events_days`, on a period.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::periodic;
use crate::config::RetentionSettings;
use crate::store::admin;
use crate::telemetry::metrics::{Metrics, Task};

/// Prunes old events every `prune_interval_seconds` until shutdown; with
/// `events_days = 0` (keep everything) it only waits for shutdown.
pub async fn run(pool: PgPool, retention: RetentionSettings, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let interval = if retention.events_days == 0 { 0 } else { retention.prune_interval_seconds.max(1) };
    periodic::every(Task::Prune, &metrics, interval, shutdown, || async {
        match admin::prune_events(&pool, retention.events_days).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, days = retention.events_days, "pruned old events"),
            Err(e) => tracing::warn!(error = %e, "pruning old events failed; will try again"),
        }
    })
    .await;
}
