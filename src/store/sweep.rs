//! The sweeps' question to the mirror: which codes no event will refresh in time
//! (the rules are in `jobs::sweep`).

use sqlx::PgPool;

use crate::config::SweepSettings;
use crate::seam::event::CodeEndpoint;

crate::text_enum::text_enum! {
    /// Why a sweep re-fetches a code.
    pub enum SweepKind {
        /// Stuck in `setting`, `removing` or `unknown`.
        Stuck = "stuck",
        /// Past its `starts_at` or `ends_at`.
        TimeBound = "time_bound",
    }
}

/// A code a sweep should re-fetch.
#[derive(Debug)]
pub struct Due {
    pub access_code_id: String,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub endpoint: CodeEndpoint,
    pub kind: SweepKind,
}

/// Up to 1,000 codes due for a sweep's re-fetch, longest unfetched first; codes
/// already queued are left out.
pub async fn due(pool: &PgPool, settings: &SweepSettings) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as!(
        Due,
        r#"
        SELECT access_code_id, device_id, workspace_id,
               CASE WHEN is_managed THEN 'managed' ELSE 'unmanaged' END AS "endpoint!: CodeEndpoint",
               CASE WHEN status IN ('setting', 'removing', 'unknown') THEN 'stuck' ELSE 'time_bound' END AS "kind!: SweepKind"
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
        settings.stuck_after_seconds as f64,
        settings.stuck_max_interval_seconds.max(settings.stuck_after_seconds) as f64,
        settings.time_bound_grace_seconds as f64,
    )
    .fetch_all(pool)
    .await
}
