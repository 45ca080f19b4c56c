//! Sweeps of the mirror itself: codes that no event will refresh in time.
//! - stuck in `setting`, `removing` or `unknown`: re-fetched once their last fetch is
//!   `stuck_after_seconds` old, then at intervals of half their time stuck (capped), so
//!   a code stuck for days costs a call every few hours, not every sweep;
//! - time-bound codes: re-fetched `time_bound_grace_seconds` after `starts_at` and after
//!   `ends_at`, when Seam changes them whether or not an event arrives.

use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::periodic;
use crate::config::SweepSettings;
use crate::seam::event::CodeEndpoint;
use crate::store::queue::{self, RefetchRequest};
use crate::telemetry::metrics::{KindLabel, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    pub stuck: usize,
    pub time_bound: usize,
}

#[derive(sqlx::FromRow)]
struct Due {
    access_code_id: String,
    device_id: Option<String>,
    workspace_id: Option<String>,
    is_managed: bool,
    reason: String,
}

/// Queues a re-fetch of every code that needs one; codes already queued are left alone.
pub async fn sweep_once(pool: &PgPool, settings: &SweepSettings) -> sqlx::Result<SweepReport> {
    let due: Vec<Due> = sqlx::query_as(
        r#"
        SELECT access_code_id, device_id, workspace_id, is_managed,
               CASE WHEN status IN ('setting', 'removing', 'unknown') THEN 'stuck' ELSE 'time_bound' END AS reason
        FROM access_codes a
        WHERE deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM access_code_refetches r WHERE r.access_code_id = a.access_code_id)
          AND (
            (status IN ('setting', 'removing', 'unknown')
             AND fetched_at < now() - make_interval(secs => GREATEST($1::float8, LEAST($2::float8,
                     EXTRACT(EPOCH FROM now() - COALESCE(status_changed_at, fetched_at))::float8 / 2))))
            OR (type = 'time_bound' AND (
                 (starts_at + make_interval(secs => $3::float8) <= now()
                  AND fetched_at < starts_at + make_interval(secs => $3::float8))
              OR (ends_at + make_interval(secs => $3::float8) <= now()
                  AND fetched_at < ends_at + make_interval(secs => $3::float8))))
          )
        ORDER BY fetched_at
        LIMIT 1000
        "#,
    )
    .bind(settings.stuck_after_seconds as f64)
    .bind(settings.stuck_max_interval_seconds.max(settings.stuck_after_seconds) as f64)
    .bind(settings.time_bound_grace_seconds as f64)
    .fetch_all(pool)
    .await?;

    let mut report = SweepReport::default();
    let requests: Vec<RefetchRequest> = due
        .iter()
        .map(|code| {
            if code.reason == "stuck" {
                report.stuck += 1;
            } else {
                report.time_bound += 1;
            }
            RefetchRequest {
                access_code_id: &code.access_code_id,
                endpoint: if code.is_managed { CodeEndpoint::Managed } else { CodeEndpoint::Unmanaged },
                device_id: code.device_id.as_deref(),
                workspace_id: code.workspace_id.as_deref(),
                event: None,
                requests: 1,
            }
        })
        .collect();
    let mut conn = pool.acquire().await?;
    queue::enqueue_all(&mut conn, &requests).await?;
    Ok(report)
}

/// Sweeps every `interval_seconds` until shutdown.
pub async fn run(pool: PgPool, settings: SweepSettings, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    periodic::every(settings.interval_seconds, shutdown, || async {
        match sweep_once(&pool, &settings).await {
            Ok(report) => {
                metrics.sweep_refetches.get_or_create(&KindLabel { kind: "stuck" }).inc_by(report.stuck as u64);
                metrics
                    .sweep_refetches
                    .get_or_create(&KindLabel { kind: "time_bound" })
                    .inc_by(report.time_bound as u64);
                if report != SweepReport::default() {
                    tracing::info!(stuck = report.stuck, time_bound = report.time_bound, "sweep queued re-fetches");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed; will try again"),
        }
    })
    .await;
}
