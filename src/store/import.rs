//! The import's progress (`import_runs`, `import_devices`) and its questions to the
//! mirror: which codes no list returned, which codes sit on devices no longer listed.
//! Every step commits with its progress, so a run cut short resumes where it stopped.
//! Runs are per workspace (`workspace_key`, see `JobScope`); the mirror questions
//! are asked of the workspace's codes (`access_codes.workspace_id`; every code for
//! the single-key setup while its workspace is unknown).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::seam::client::Device;
use crate::seam::workspaces::JobScope;
use crate::store::queue::{self, KnownCode, RefetchRequest};

/// A run, as far as it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    /// Where `/devices/list` goes on; `None`: at its first page (or every page read).
    pub device_cursor: Option<String>,
    pub devices_listed: bool,
    pub devices_listing_started_at: DateTime<Utc>,
}

/// A device of a run that still needs its codes listed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDevice {
    pub device_id: String,
    pub connected_account_id: Option<String>,
    pub workspace_id: Option<String>,
}

/// What the codes of one device did to the mirror.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeCounts {
    pub created: i32,
    pub changed: i32,
    pub unchanged: i32,
    pub stale: i32,
    pub skipped: i32,
}

impl CodeCounts {
    /// Codes the lists returned that were stored (or found older than the mirror).
    pub fn found(&self) -> i32 {
        self.created + self.changed + self.unchanged + self.stale
    }
}

/// What a worker starting up should do about the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupImport {
    /// A run was cut short: go on with it.
    Resume,
    /// The mirror is empty and no import ever finished: import everything.
    Start,
    /// Nothing to do.
    None,
}

/// What to do about the import of `scope`'s workspace on start.
pub async fn startup_import(pool: &PgPool, scope: &JobScope) -> sqlx::Result<StartupImport> {
    let row = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM import_runs WHERE workspace_key = $1 AND finished_at IS NULL) AS "unfinished!",
                  EXISTS (SELECT 1 FROM import_runs WHERE workspace_key = $1 AND finished_at IS NOT NULL) AS "finished!",
                  EXISTS (SELECT 1 FROM access_codes
                          WHERE $2::text IS NULL OR workspace_id = $2 OR ($3 AND workspace_id IS NULL)) AS "mirrored!""#,
        scope.key,
        scope.workspace_id,
        scope.sole,
    )
    .fetch_one(pool)
    .await?;
    Ok(if row.unfinished {
        StartupImport::Resume
    } else if !row.finished && !row.mirrored {
        StartupImport::Start
    } else {
        StartupImport::None
    })
}

/// The first workspace, once its id is known, takes over the runs kept under ''
/// (those from before workspaces, made with the first credential): the finished
/// ones, and the unfinished one unless it has one of its own. Returns how many.
pub async fn adopt_legacy_runs(pool: &PgPool, workspace_id: &str) -> sqlx::Result<u64> {
    let adopted = sqlx::query!(
        "UPDATE import_runs SET workspace_key = $1, updated_at = now()
         WHERE workspace_key = '' AND (finished_at IS NOT NULL OR NOT EXISTS (
             SELECT 1 FROM import_runs WHERE workspace_key = $1 AND finished_at IS NULL))",
        workspace_id,
    )
    .execute(pool)
    .await?;
    Ok(adopted.rows_affected())
}

/// The workspace's unfinished run, or a new one. Call it holding the workspace's
/// import run lock.
pub async fn current_or_new_run(pool: &PgPool, scope: &JobScope) -> sqlx::Result<(Run, bool)> {
    let unfinished = sqlx::query_as!(
        Run,
        "SELECT id, started_at, device_cursor, devices_listed, devices_listing_started_at
         FROM import_runs WHERE workspace_key = $1 AND finished_at IS NULL",
        scope.key,
    )
    .fetch_optional(pool)
    .await?;
    if let Some(run) = unfinished {
        return Ok((run, true));
    }
    let run = sqlx::query_as!(
        Run,
        "INSERT INTO import_runs (workspace_key, workspace_label) VALUES ($1, $2)
         RETURNING id, started_at, device_cursor, devices_listed, devices_listing_started_at",
        scope.key,
        scope.label,
    )
    .fetch_one(pool)
    .await?;
    Ok((run, false))
}

/// The database's clock: what an answer that follows is at least as fresh as.
pub async fn now(pool: &PgPool) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(pool).await
}

/// Records one page of `/devices/list`: its devices, and where the next page starts
/// (`None`: this was the last), in one transaction.
pub async fn record_devices_page(
    pool: &PgPool,
    run_id: i64,
    devices: &[Device],
    skipped: usize,
    next_cursor: Option<&str>,
    calls: u32,
) -> sqlx::Result<()> {
    let mut tx = crate::store::begin(pool).await?;
    let ids: Vec<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
    let accounts: Vec<Option<&str>> = devices.iter().map(|d| d.connected_account_id.as_deref()).collect();
    let workspaces: Vec<Option<&str>> = devices.iter().map(|d| d.workspace_id.as_deref()).collect();
    sqlx::query!(
        "INSERT INTO import_devices (run_id, device_id, connected_account_id, workspace_id)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])
         ON CONFLICT (run_id, device_id) DO NOTHING",
        run_id,
        &ids as &[&str],
        &accounts as &[Option<&str>],
        &workspaces as &[Option<&str>],
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE import_runs SET device_cursor = $2::text, devices_listed = $2::text IS NULL,
             devices_skipped = devices_skipped + $3, seam_calls = seam_calls + $4, updated_at = now()
         WHERE id = $1",
        run_id,
        next_cursor,
        skipped as i32,
        calls as i32,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Lists the devices again from the first page (a stored cursor Seam no longer
/// takes): devices already recorded stay, done or not.
/// Returns when the new listing began.
pub async fn restart_device_listing(pool: &PgPool, run_id: i64) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar!(
        "UPDATE import_runs SET device_cursor = NULL, devices_listed = false, devices_skipped = 0,
             devices_listing_started_at = now(), updated_at = now()
         WHERE id = $1
         RETURNING devices_listing_started_at",
        run_id,
    )
    .fetch_one(pool)
    .await
}

/// The devices the run has listed so far, and how many of them are done.
pub async fn device_counts(pool: &PgPool, run_id: i64) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "total!", count(done_at) AS "done!" FROM import_devices WHERE run_id = $1"#,
        run_id,
    )
    .fetch_one(pool)
    .await?;
    Ok((row.total, row.done))
}

/// The devices of the run whose codes are still to be listed, in id order.
pub async fn pending_devices(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<RunDevice>> {
    sqlx::query_as!(
        RunDevice,
        "SELECT device_id, connected_account_id, workspace_id FROM import_devices
         WHERE run_id = $1 AND done_at IS NULL ORDER BY device_id",
        run_id,
    )
    .fetch_all(pool)
    .await
}

/// Queues a re-fetch of every mirrored, not deleted code of `device` that the
/// lists did not return (`listed`) and that no fetch saw since `listed_from` (when
/// the first list call began): deleted since, most likely; the re-fetch says. Only
/// codes of the kinds whose list was read whole (`complete`: `is_managed` values).
pub async fn queue_unlisted_codes(
    conn: &mut PgConnection,
    device: &RunDevice,
    listed: &[String],
    listed_from: DateTime<Utc>,
    complete: &[bool],
) -> sqlx::Result<usize> {
    let codes = sqlx::query_as!(
        KnownCode,
        r#"SELECT access_code_id, is_managed, device_id, COALESCE($5, workspace_id) AS workspace_id,
                  COALESCE($6, connected_account_id) AS connected_account_id
           FROM access_codes
           WHERE device_id = $1 AND deleted_at IS NULL AND fetched_at < $2 AND NOT (access_code_id = ANY($3))
             AND is_managed = ANY($4)"#,
        device.device_id,
        listed_from,
        listed,
        complete,
        device.workspace_id,
        device.connected_account_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let requests: Vec<RefetchRequest> = codes.iter().map(|code| code.refetch(None)).collect();
    queue::enqueue_all(conn, &requests).await?;
    Ok(requests.len())
}

/// Marks `device` done with what its codes did, inside the transaction that
/// stored them.
pub async fn finish_device(
    conn: &mut PgConnection,
    run_id: i64,
    device_id: &str,
    counts: &CodeCounts,
    queued: usize,
    calls: u32,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE import_devices SET done_at = now(), codes_found = $3 WHERE run_id = $1 AND device_id = $2",
        run_id,
        device_id,
        counts.found(),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE import_runs SET
             codes_created = codes_created + $2, codes_changed = codes_changed + $3,
             codes_unchanged = codes_unchanged + $4, codes_stale = codes_stale + $5,
             codes_skipped = codes_skipped + $6, codes_queued = codes_queued + $7,
             seam_calls = seam_calls + $8, last_error = NULL, updated_at = now()
         WHERE id = $1",
        run_id,
        counts.created,
        counts.changed,
        counts.unchanged,
        counts.stale,
        counts.skipped,
        queued as i32,
        calls as i32,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the run: queues a re-fetch of every mirrored, not deleted code of the
/// workspace whose device the run did not list (and that no fetch saw since the
/// listing began), and marks the run finished. Returns how many were queued.
pub async fn finish_run(pool: &PgPool, run: &Run, scope: &JobScope) -> sqlx::Result<usize> {
    let mut tx = crate::store::begin(pool).await?;
    let codes = sqlx::query_as!(
        KnownCode,
        "SELECT a.access_code_id, a.is_managed, a.device_id, a.workspace_id, a.connected_account_id
         FROM access_codes a
         WHERE a.deleted_at IS NULL AND a.fetched_at < $2
           AND ($3::text IS NULL OR a.workspace_id = $3 OR ($4 AND a.workspace_id IS NULL))
           AND NOT EXISTS (SELECT 1 FROM import_devices d WHERE d.run_id = $1 AND d.device_id = a.device_id)",
        run.id,
        run.devices_listing_started_at,
        scope.workspace_id,
        scope.sole,
    )
    .fetch_all(&mut *tx)
    .await?;
    let requests: Vec<RefetchRequest> = codes.iter().map(|code| code.refetch(None)).collect();
    queue::enqueue_all(&mut tx, &requests).await?;
    sqlx::query!(
        "UPDATE import_runs SET finished_at = now(), codes_queued = codes_queued + $2, last_error = NULL,
             updated_at = now()
         WHERE id = $1",
        run.id,
        requests.len() as i32,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(requests.len())
}

/// Why the run stopped short; it is resumed from where it got.
pub async fn record_failure(pool: &PgPool, run_id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query!("UPDATE import_runs SET last_error = $2, updated_at = now() WHERE id = $1", run_id, error)
        .execute(pool)
        .await?;
    Ok(())
}

/// A workspace's newest run, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The workspace's id ('' for the single-key setup while it is unknown).
    pub workspace_key: String,
    pub workspace_label: Option<String>,
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub devices_listed: bool,
    pub devices_total: i64,
    pub devices_done: i64,
    pub devices_skipped: i32,
    pub codes_created: i32,
    pub codes_changed: i32,
    pub codes_unchanged: i32,
    pub codes_stale: i32,
    pub codes_skipped: i32,
    pub codes_queued: i32,
    pub seam_calls: i32,
    pub last_error: Option<String>,
}

impl RunSummary {
    /// Codes the lists returned over the devices done.
    pub fn codes_imported(&self) -> i64 {
        i64::from(self.codes_created)
            + i64::from(self.codes_changed)
            + i64::from(self.codes_unchanged)
            + i64::from(self.codes_stale)
    }
}

/// Each workspace's newest run, by workspace key.
pub async fn latest_runs(pool: &PgPool) -> sqlx::Result<Vec<RunSummary>> {
    sqlx::query_as!(
        RunSummary,
        r#"SELECT DISTINCT ON (r.workspace_key) r.workspace_key, r.workspace_label, r.id, r.started_at, r.finished_at, r.devices_listed,
                  (SELECT count(*) FROM import_devices d WHERE d.run_id = r.id) AS "devices_total!",
                  (SELECT count(*) FROM import_devices d WHERE d.run_id = r.id AND d.done_at IS NOT NULL) AS "devices_done!",
                  r.devices_skipped, r.codes_created, r.codes_changed, r.codes_unchanged, r.codes_stale,
                  r.codes_skipped, r.codes_queued, r.seam_calls, r.last_error
           FROM import_runs r ORDER BY r.workspace_key, r.id DESC"#,
    )
    .fetch_all(pool)
    .await
}
