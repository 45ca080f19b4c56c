//! Everything that reads or writes Postgres: the pool and the schema (here),
//! verified events and their re-fetch requests (`intake`), the re-fetch queue
//! (`queue`), the mirror (`mirror`), the operators' queries (`admin`) and the
//! one-replica-at-a-time lock of the periodic jobs (`run_lock`).

pub mod admin;
pub mod backup;
pub mod changes;
pub mod console;
pub mod import;
pub mod intake;
pub mod kept;
pub mod mirror;
pub mod queue;
pub mod run_lock;
pub mod sweep;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::DatabaseSettings;

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Creates the database if asked to and it does not exist, then opens the pool.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    if settings.create_if_missing {
        let url = settings.url.expose_secret();
        let exists = Postgres::database_exists(url).await.context("cannot reach the database server")?;
        if !exists {
            Postgres::create_database(url).await.context("cannot create the database")?;
            tracing::info!("created the database");
        }
    }
    pool_options(settings).connect_with(settings.connect_options()?).await.context("cannot connect to the database")
}

pub fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout())
        // sqlx tests every connection with a round trip when it is returned to the pool
        // and, by default, again when it is taken out: under load that doubles the
        // round trips of a short statement. Taken out, a connection is tested only if
        // it sat idle long enough to have died unseen (a database restart, an idle
        // timeout); one returned a moment ago was tested then.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_TEST {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// How long a pooled connection sits idle before it is tested when taken out.
const IDLE_BEFORE_TEST: std::time::Duration = std::time::Duration::from_secs(1);

/// Begins a transaction on a pooled connection, safely even if the caller is
/// dropped meanwhile (a client gone, a request timeout, a `select!`).
///
/// sqlx 0.9's `Pool::begin` is not: dropped while its `BEGIN` is in flight, it hands
/// the connection back to the pool inside a transaction nothing ends
/// (transact-rs/sqlx#4393), and the next borrower's statements run in it, with
/// `now()` frozen at that `BEGIN` (the worker then saw no re-fetch as due) and
/// their writes uncommitted. Here the `BEGIN` runs in a task of its own: a caller
/// that goes away drops the finished transaction, which rolls back.
pub async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        // The task panicked, or the runtime is shutting down: no transaction.
        .unwrap_or_else(|e| Err(sqlx::Error::Io(std::io::Error::other(format!("BEGIN did not finish: {e}")))))
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("cannot apply migrations")
}

/// How many of the compiled-in migrations the database has not applied.
pub async fn pending_migrations(pool: &PgPool) -> sqlx::Result<usize> {
    let applied: Vec<i64> =
        match sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await {
            Ok(rows) => rows,
            // No migrations table yet: none applied.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e),
        };
    Ok(MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).filter(|m| !applied.contains(&m.version)).count())
}

/// SQLSTATE class 22: Postgres refused the data itself (e.g. a NUL character in
/// text), not a fault of the database's state; retrying the same data cannot help.
pub fn is_data_error(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|code| code.starts_with("22")))
}

/// Whether `error` is Postgres refusing a second row with the same key.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}
