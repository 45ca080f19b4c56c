//! Pruning: deletes stored events older than `retention.events_days`, on a period.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::periodic;
use crate::config::RetentionSettings;
use crate::store::admin;

/// Prunes old events every `prune_interval_seconds` until shutdown.
pub async fn run(pool: PgPool, retention: RetentionSettings, shutdown: CancellationToken) {
    if retention.events_days == 0 {
        return;
    }
    periodic::every(retention.prune_interval_seconds.max(1), shutdown, || async {
        match admin::prune_events(&pool, retention.events_days).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, days = retention.events_days, "pruned old events"),
            Err(e) => tracing::warn!(error = %e, "pruning old events failed; will try again"),
        }
    })
    .await;
}
