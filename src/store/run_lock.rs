//! The right to run a job (catch-up, the import) for one workspace, held by one
//! replica at a time: a session-level advisory lock on a connection of its own,
//! opened for the run and closed after. Each workspace has its own lock
//! (`keys::of_workspace`), so different workspaces' runs go side by side.
//!
//! A dedicated connection rather than a pooled one, and rather than a transaction-level
//! lock (`pg_try_advisory_xact_lock`) in an open transaction, because a run holds the
//! lock across HTTP calls to Seam:
//! - a session lock on a *pooled* connection outlives a run that panics or whose
//!   future is dropped: the connection goes back to the pool still holding it, and
//!   every replica skips the job until that connection happens to close;
//! - an open transaction would keep a pooled connection busy and `idle in
//!   transaction` for the whole run, subject to `idle_in_transaction_session_timeout`
//!   and to the alerts operators put on such sessions.
//!
//! Here the lock is released on every path: `release` unlocks and closes the
//! connection; if the run fails, it is released the same way; if the run panics or
//! its future is dropped, dropping the connection closes its socket and Postgres ends
//! the session, lock included (a moment later: the next run may be skipped once).
//! The cost is one connection set up per run, outside `database.max_connections`.
//! Like the lock before it, it needs a session the connection keeps (a pooler in
//! transaction mode would not do).

use sqlx::{Connection, PgConnection, PgPool};

/// The advisory lock keys, one per job and workspace: two jobs never share one.
pub mod keys {
    /// Catch-up from Seam's event log.
    pub const CATCH_UP: i64 = 0x5ea3_ca7c;
    /// The import of every device's codes.
    pub const IMPORT: i64 = 0x5ea3_1a9b;

    /// The lock of `job` (`CATCH_UP`, `IMPORT`) for the workspace whose state is
    /// keyed `workspace_key`: the job's own key for '' (the single-key setup: the
    /// key it had before workspaces, so replicas of both versions exclude each other
    /// during an upgrade), else a 64-bit FNV-1a hash of the job and the key (stable
    /// across builds and replicas; two workspaces sharing one is as likely as a
    /// 64-bit collision, and would only make them take turns).
    pub fn of_workspace(job: i64, workspace_key: &str) -> i64 {
        if workspace_key.is_empty() {
            return job;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in job.to_be_bytes().iter().chain(workspace_key.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash as i64
    }
}

pub struct RunLock {
    conn: PgConnection,
    key: i64,
}

impl RunLock {
    /// The lock `key`, or `None` when another replica holds it.
    pub async fn try_acquire(pool: &PgPool, key: i64) -> anyhow::Result<Option<RunLock>> {
        let options = pool.connect_options();
        let timeout = pool.options().get_acquire_timeout();
        let mut conn = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| anyhow::anyhow!("no connection for the run lock within {timeout:?}"))??;
        let locked: bool =
            sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, key).fetch_one(&mut conn).await?;
        if !locked {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(RunLock { conn, key }))
    }

    /// Unlocks, so the next run anywhere can take it at once, and closes the connection.
    pub async fn release(mut self) {
        let _ = sqlx::query!("SELECT pg_advisory_unlock($1)", self.key).fetch_one(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::keys::{CATCH_UP, IMPORT, of_workspace};

    #[test]
    fn each_job_and_workspace_has_its_own_lock_and_the_single_key_setup_keeps_the_old_one() {
        assert_eq!(of_workspace(CATCH_UP, ""), CATCH_UP);
        assert_eq!(of_workspace(IMPORT, ""), IMPORT);
        let keys = [
            of_workspace(CATCH_UP, "ws_a"),
            of_workspace(CATCH_UP, "ws_b"),
            of_workspace(IMPORT, "ws_a"),
            of_workspace(IMPORT, "ws_b"),
            CATCH_UP,
            IMPORT,
        ];
        let unique: std::collections::HashSet<i64> = keys.iter().copied().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(of_workspace(CATCH_UP, "ws_a"), of_workspace(CATCH_UP, "ws_a"), "stable");
    }
}
