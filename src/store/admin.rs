//! What operators do and see: queue status, dead letters, manual re-fetches and
//! retention. Used by the CLI, the console and `/metrics`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::seam::event::CodeEndpoint;
use crate::store::import as import_progress;
use crate::store::queue::{self, REFETCH_CHANNEL, RefetchRequest};

crate::text_enum::text_enum! {
    /// How a catch-up run ended (`catch_up_state.last_outcome`, and a metric label).
    pub enum CatchUpRun {
        /// Read the log up to the run's start.
        Completed = "completed",
        /// Stopped at the page cap with its progress saved; the next run goes on.
        Partial = "partial",
        /// Another replica ran it (never stored).
        Skipped = "skipped",
        Failed = "failed",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueStatus {
    /// Re-fetches not dead-lettered: waiting, backing off or in flight.
    pub pending: i64,
    /// Of those, claimed by a worker right now.
    pub in_flight: i64,
    /// Of those, due now.
    pub due: i64,
    pub oldest_pending_age_seconds: Option<f64>,
    pub dead_letters: i64,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_webhook_age_seconds: Option<f64>,
    pub mirrored_codes: i64,
    /// The workspace furthest behind: the age of the oldest catch-up mark (`None`:
    /// no workspace has one yet).
    pub catch_up_mark_age_seconds: Option<f64>,
    /// Since the oldest of the workspaces' last successful catch-up runs (`None`:
    /// none has succeeded yet).
    pub catch_up_success_age_seconds: Option<f64>,
}

pub async fn queue_status(pool: &PgPool) -> sqlx::Result<QueueStatus> {
    sqlx::query_as!(
        QueueStatus,
        r#"
        SELECT q.*,
            (SELECT max(received_at) FROM seam_events) AS last_webhook_at,
            EXTRACT(EPOCH FROM now() - (SELECT max(received_at) FROM seam_events))::float8 AS last_webhook_age_seconds,
            (SELECT count(*) FROM access_codes) AS "mirrored_codes!",
            EXTRACT(EPOCH FROM now() - c.oldest_mark)::float8 AS catch_up_mark_age_seconds,
            EXTRACT(EPOCH FROM now() - c.oldest_success)::float8 AS catch_up_success_age_seconds
        FROM (
            SELECT
                count(*) FILTER (WHERE dead_lettered_at IS NULL) AS "pending!",
                count(*) FILTER (WHERE dead_lettered_at IS NULL AND claimed_until > now()) AS "in_flight!",
                count(*) FILTER (WHERE dead_lettered_at IS NULL AND next_attempt_at <= now()
                                   AND (claimed_until IS NULL OR claimed_until <= now())) AS "due!",
                EXTRACT(EPOCH FROM now() - min(first_requested_at) FILTER (WHERE dead_lettered_at IS NULL))::float8
                    AS oldest_pending_age_seconds,
                count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS "dead_letters!"
            FROM access_code_refetches
        ) q,
        (SELECT min(high_water_mark) AS oldest_mark, min(last_success_at) AS oldest_success FROM catch_up_state) c
        "#,
    )
    .fetch_one(pool)
    .await
}

/// One workspace's catch-up, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct CatchUpState {
    /// The workspace's id ('' for the single-key setup while it is unknown).
    pub workspace_key: String,
    pub workspace_label: Option<String>,
    pub high_water_mark: Option<DateTime<Utc>>,
    pub mark_age_seconds: Option<f64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub success_age_seconds: Option<f64>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// `completed`, `partial` (stopped at the page cap, progress saved) or `failed`.
    pub last_outcome: Option<CatchUpRun>,
    pub last_events_found: i32,
    pub last_events_new: i32,
    pub last_error: Option<String>,
}

/// Every workspace's catch-up state, by workspace key.
pub async fn catch_up_states(pool: &PgPool) -> sqlx::Result<Vec<CatchUpState>> {
    sqlx::query_as!(
        CatchUpState,
        r#"SELECT workspace_key, workspace_label, high_water_mark,
                  EXTRACT(EPOCH FROM now() - high_water_mark)::float8 AS mark_age_seconds,
                  last_success_at, EXTRACT(EPOCH FROM now() - last_success_at)::float8 AS success_age_seconds,
                  last_run_at, last_outcome AS "last_outcome: CatchUpRun", last_events_found, last_events_new,
                  last_error
           FROM catch_up_state ORDER BY workspace_key"#,
    )
    .fetch_all(pool)
    .await
}

/// One workspace's jobs, for `status` and the console's health page: its catch-up state and its newest import run.
pub struct WorkspaceJobs {
    /// The workspace id ('' for the single-key setup while it is unknown).
    pub key: String,
    pub label: Option<String>,
    pub catch_up: Option<CatchUpState>,
    pub import: Option<import_progress::RunSummary>,
}

/// The workspaces that have catch-up state or import runs, by key.
pub fn workspace_jobs(catch_ups: Vec<CatchUpState>, imports: Vec<import_progress::RunSummary>) -> Vec<WorkspaceJobs> {
    fn of<'a>(jobs: &'a mut BTreeMap<String, WorkspaceJobs>, key: &str) -> &'a mut WorkspaceJobs {
        let new = || WorkspaceJobs { key: key.to_owned(), label: None, catch_up: None, import: None };
        jobs.entry(key.to_owned()).or_insert_with(new)
    }
    let mut jobs = BTreeMap::new();
    for state in catch_ups {
        let job = of(&mut jobs, &state.workspace_key);
        job.label = job.label.take().or_else(|| state.workspace_label.clone());
        job.catch_up = Some(state);
    }
    for run in imports {
        let job = of(&mut jobs, &run.workspace_key);
        job.label = job.label.take().or_else(|| run.workspace_label.clone());
        job.import = Some(run);
    }
    jobs.into_values().collect()
}

/// Every workspace's catch-up and newest import, as `status` and the console show
/// them: the state kept for a workspace not known yet is left out when nothing ran
/// under it and other workspaces have some; with none at all, one empty entry.
pub async fn workspaces_jobs(pool: &PgPool) -> sqlx::Result<Vec<WorkspaceJobs>> {
    let mut workspaces = workspace_jobs(catch_up_states(pool).await?, import_progress::latest_runs(pool).await?);
    let ran = |w: &WorkspaceJobs| w.import.is_some() || w.catch_up.as_ref().is_some_and(|c| c.last_run_at.is_some());
    if workspaces.len() > 1 {
        workspaces.retain(|w| !w.key.is_empty() || ran(w));
    }
    if workspaces.is_empty() {
        workspaces.push(WorkspaceJobs { key: String::new(), label: None, catch_up: None, import: None });
    }
    Ok(workspaces)
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub access_code_id: String,
    pub endpoint: CodeEndpoint,
    pub attempts: i32,
    pub dead_lettered_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub last_event_type: Option<String>,
}

pub async fn dead_letters(pool: &PgPool) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as!(
        DeadLetter,
        r#"SELECT access_code_id, endpoint AS "endpoint: CodeEndpoint", attempts,
                dead_lettered_at AS "dead_lettered_at!", last_error, last_event_type
         FROM access_code_refetches WHERE dead_lettered_at IS NOT NULL
         ORDER BY dead_lettered_at, access_code_id"#,
    )
    .fetch_all(pool)
    .await
}

/// Puts dead letters back in the queue, due now: the given ones, or all when
/// `ids` is None. Returns the ids redriven.
pub async fn redrive(pool: &PgPool, ids: Option<&[String]>) -> sqlx::Result<Vec<String>> {
    let mut tx = crate::store::begin(pool).await?;
    let redriven: Vec<String> = sqlx::query_scalar!(
        "UPDATE access_code_refetches SET
             dead_lettered_at = NULL, attempts = 0, next_attempt_at = now(),
             first_requested_at = now(), updated_at = now()
         WHERE dead_lettered_at IS NOT NULL AND ($1::text[] IS NULL OR access_code_id = ANY($1))
         RETURNING access_code_id",
        ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    if !redriven.is_empty() {
        sqlx::query!("SELECT pg_notify($1, '')", REFETCH_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let mut redriven = redriven;
    redriven.sort();
    Ok(redriven)
}

/// Queues a re-fetch of each code now, as if an event had arrived.
pub async fn refetch(pool: &PgPool, ids: &[String], endpoint: CodeEndpoint) -> sqlx::Result<()> {
    let codes: Vec<(String, CodeEndpoint)> = ids.iter().map(|id| (id.clone(), endpoint)).collect();
    refetch_each(pool, &codes).await
}

/// Queues a re-fetch of each code, each from its own endpoint, in one statement.
pub async fn refetch_each(pool: &PgPool, codes: &[(String, CodeEndpoint)]) -> sqlx::Result<()> {
    let mut unique: Vec<&(String, CodeEndpoint)> = codes.iter().collect();
    unique.sort_by_key(|(id, _)| id);
    unique.dedup_by_key(|(id, _)| id);
    let requests: Vec<RefetchRequest> = unique
        .into_iter()
        .map(|(id, endpoint)| RefetchRequest {
            access_code_id: id,
            endpoint: *endpoint,
            device_id: None,
            workspace_id: None,
            connected_account_id: None,
            event: None,
            requests: 1,
        })
        .collect();
    let mut conn = pool.acquire().await?;
    queue::enqueue_all(&mut conn, &requests).await
}

/// Every code that still exists in the mirror, with the endpoint that serves it.
pub async fn existing_codes(pool: &PgPool) -> sqlx::Result<Vec<(String, CodeEndpoint)>> {
    let rows = sqlx::query!(
        "SELECT access_code_id, is_managed FROM access_codes WHERE deleted_at IS NULL ORDER BY access_code_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.access_code_id, CodeEndpoint::of(row.is_managed))).collect())
}

/// Deletes stored events received more than `days` days ago, in batches so no
/// transaction grows large. The mirror and its history are kept. Returns how many.
pub async fn prune_events(pool: &PgPool, days: u32) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query!(
            "DELETE FROM seam_events WHERE event_id IN (
                 SELECT event_id FROM seam_events
                 WHERE received_at < now() - make_interval(days => $1)
                 LIMIT 5000)",
            i32::try_from(days).unwrap_or(i32::MAX),
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 5000 {
            return Ok(total);
        }
    }
}
