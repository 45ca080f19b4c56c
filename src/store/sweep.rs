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
        /// Any other code that exists, not fetched for `settled_interval_seconds`.
        Settled = "settled",
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

/// Of the codes that exist and are not stuck (`set`, `unset`: settled), those whose last
/// fetch is older than `settled_interval_seconds`, longest unfetched first, but only this
/// sweep's share: `SETTLED_MARGIN` × settled codes × `interval_seconds` /
/// `settled_interval_seconds`, so that each code comes round once per settled interval
/// in a steady trickle of fetches. Codes already queued are left out. Nothing when
/// either interval is 0.
pub async fn settled_due(pool: &PgPool, settings: &SweepSettings) -> sqlx::Result<Vec<Due>> {
    let Some(share) = settled_share(settings) else { return Ok(Vec::new()) };
    sqlx::query_as!(
        Due,
        r#"
        WITH settled AS (
            SELECT count(*) AS codes FROM access_codes
            WHERE deleted_at IS NULL AND status NOT IN ('setting', 'removing', 'unknown')
        )
        SELECT access_code_id, device_id, workspace_id,
               CASE WHEN is_managed THEN 'managed' ELSE 'unmanaged' END AS "endpoint!: CodeEndpoint",
               'settled' AS "kind!: SweepKind"
        FROM access_codes a
        WHERE deleted_at IS NULL
          AND status NOT IN ('setting', 'removing', 'unknown')
          AND fetched_at < now() - make_interval(secs => $1::float8)
          AND NOT EXISTS (SELECT 1 FROM access_code_refetches r WHERE r.access_code_id = a.access_code_id)
        ORDER BY fetched_at
        LIMIT (SELECT ceil(codes * $2::float8)::bigint FROM settled)
        "#,
        settings.settled_interval_seconds as f64,
        share,
    )
    .fetch_all(pool)
    .await
}

/// How much more than the bare rate the settled sweep queues, to keep up as codes are added.
pub const SETTLED_MARGIN: f64 = 1.1;

/// The fraction of the settled codes one sweep may queue (`None`: the sweep is off).
pub fn settled_share(settings: &SweepSettings) -> Option<f64> {
    (settings.settled_interval_seconds > 0 && settings.interval_seconds > 0)
        .then(|| SETTLED_MARGIN * settings.interval_seconds as f64 / settings.settled_interval_seconds as f64)
}
