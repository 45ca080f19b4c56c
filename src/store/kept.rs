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
    fn connection_lost(&self) -> bool {
        matches!(self, sqlx::Error::Io(_))
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
    /// an error the connection is closed; a kept one that failed with an I/O error
    /// is replaced and the step run once more, so a connection that died while idle
    /// costs no failed step.
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
