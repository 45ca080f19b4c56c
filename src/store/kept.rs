//! A connection a loop keeps for itself (an intake writer, a worker loop), taken
//! out of the pool (detached) once and used for every step.
//!
//! sqlx tests a pooled connection with a round trip on every return (and, after an
//! idle second, on checkout): for a loop running a few short statements per step,
//! that is a third more round trips. A kept connection is nobody else's, so it can
//! never hand a half-done transaction on; it is closed after an error, or after a
//! step that never finished (dropped mid-way, or panicked), whatever state that
//! left it in, and the next step takes a new one.

use std::future::Future;

use sqlx::{PgConnection, PgPool};

pub struct KeptConnection {
    pool: PgPool,
    /// None while a step has it (a step that never finishes takes it along).
    conn: Option<PgConnection>,
}

/// Whether an error means the connection itself failed (it may have died while
/// kept idle: a database restart, an idle timeout), so a new one may succeed.
pub trait ConnectionLost {
    fn connection_lost(&self) -> bool;
}

impl ConnectionLost for sqlx::Error {
    /// The socket failed, or the server ended the session: a restart or a
    /// terminated backend answers the next statement with `FATAL` 57P01–57P03 before
    /// it closes; class 08 is a connection exception.
    fn connection_lost(&self) -> bool {
        match self {
            sqlx::Error::Io(_) => true,
            sqlx::Error::Database(e) => e.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
            _ => false,
        }
    }
}

impl ConnectionLost for anyhow::Error {
    fn connection_lost(&self) -> bool {
        self.downcast_ref::<sqlx::Error>().is_some_and(ConnectionLost::connection_lost)
    }
}

impl KeptConnection {
    pub fn new(pool: PgPool) -> KeptConnection {
        KeptConnection { pool, conn: None }
    }

    /// Runs one step on the kept connection (a new one from the pool when none is
    /// kept). The step owns the connection while it runs and hands it back with its
    /// result: dropped mid-way or panicking, it takes the connection with it. After
    /// an error the connection is closed; a kept one that was lost
    /// (`ConnectionLost`) is replaced and the step run once more, so a connection
    /// that died while idle costs no failed step.
    pub async fn run<T, E, F, Fut>(&mut self, mut step: F) -> Result<T, E>
    where
        F: FnMut(PgConnection) -> Fut,
        Fut: Future<Output = (PgConnection, Result<T, E>)>,
        E: From<sqlx::Error> + ConnectionLost,
    {
        let kept = self.conn.is_some();
        match self.try_run(&mut step).await {
            Err(e) if kept && e.connection_lost() => self.try_run(&mut step).await,
            result => result,
        }
    }

    async fn try_run<T, E, F, Fut>(&mut self, step: &mut F) -> Result<T, E>
    where
        F: FnMut(PgConnection) -> Fut,
        Fut: Future<Output = (PgConnection, Result<T, E>)>,
        E: From<sqlx::Error>,
    {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?.detach(),
        };
        let (conn, result) = step(conn).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The backend serving the kept connection, found by a step.
    async fn backend(kept: &mut KeptConnection) -> i32 {
        kept.run(|mut conn| async move {
            let pid = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await;
            (conn, pid)
        })
        .await
        .unwrap()
    }

    #[sqlx::test]
    async fn steps_share_one_connection_until_one_fails(pool: PgPool) {
        let mut kept = KeptConnection::new(pool);
        let first = backend(&mut kept).await;
        assert_eq!(backend(&mut kept).await, first, "a step that succeeded leaves its connection kept");
        let mut runs = 0;
        let failed: sqlx::Result<()> = kept
            .run(|mut conn| {
                runs += 1;
                async move {
                    let result = sqlx::query("SELECT * FROM no_such_table").execute(&mut conn).await.map(drop);
                    (conn, result)
                }
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(runs, 1, "an error of the statement, not of the connection, is not retried");
        assert_ne!(backend(&mut kept).await, first, "after an error the connection is replaced");
    }

    #[sqlx::test]
    async fn a_step_dropped_mid_way_takes_its_connection_along(pool: PgPool) {
        let mut kept = KeptConnection::new(pool);
        let first = backend(&mut kept).await;
        // Abandoned inside a transaction: whatever that left on the connection goes with it.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(200),
            kept.run(|mut conn| async move {
                let begun = sqlx::query("BEGIN").execute(&mut conn).await.map(drop);
                std::future::pending::<()>().await;
                (conn, begun)
            }),
        )
        .await;
        assert!(abandoned.is_err(), "the step was cut off");
        assert_ne!(backend(&mut kept).await, first, "the next step runs on a new connection");
    }

    #[sqlx::test]
    async fn a_kept_connection_that_died_is_replaced_and_the_step_runs_once_more(pool: PgPool) {
        let mut kept = KeptConnection::new(pool.clone());
        let first = backend(&mut kept).await;
        let terminated: bool =
            sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(first).fetch_one(&pool).await.unwrap();
        assert!(terminated);
        let mut runs = 0;
        let second: i32 = kept
            .run(|mut conn| {
                runs += 1;
                async move {
                    let pid = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await;
                    (conn, pid)
                }
            })
            .await
            .unwrap();
        assert_eq!(runs, 2, "run once on the dead connection, once on a new one");
        assert_ne!(second, first);
    }
}
