//! Databases (one per scenario, created by `seam-access-sync migrate`, dropped at the
//! end) and control of the local Postgres cluster for the restart scenario.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::service::BIN;

/// Every database this suite makes starts with this.
pub const PREFIX: &str = "sas_faults_";

/// The Postgres server the suite uses: `TEST_DATABASE_URL` (any database name in it is
/// replaced), else the local one.
pub fn server_url() -> String {
    let url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let url = url.split('?').next().unwrap_or_default().to_owned();
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _database)) => format!("{scheme}://{authority}"),
            None => url,
        },
        None => url,
    }
}

/// A connection to the server's `postgres` database, for creating and dropping.
pub struct Admin {
    base: String,
    pool: PgPool,
}

impl Admin {
    pub async fn connect() -> anyhow::Result<Admin> {
        let base = server_url();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&format!("{base}/postgres"))
            .await
            .map_err(|e| anyhow::anyhow!("Postgres does not answer at {base}: {e}"))?;
        Ok(Admin { base, pool })
    }

    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    /// Creates and migrates the database with the binary's own `migrate` command.
    pub async fn create(&self, database: &str) -> anyhow::Result<String> {
        self.drop_database(database).await?;
        let url = self.url(database);
        let output = tokio::process::Command::new(BIN)
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("APP_LOG__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "seam-access-sync migrate failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(url)
    }

    /// Drops the database, closing any connection still open to it. Retried for a
    /// while: Postgres may be coming back from a restart.
    pub async fn drop_database(&self, database: &str) -> anyhow::Result<()> {
        // The name is spliced into SQL: only our own, plain names.
        anyhow::ensure!(
            database.starts_with(PREFIX) && database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "not a database of this suite: {database}"
        );
        let started = Instant::now();
        loop {
            let dropped =
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")))
                    .execute(&self.pool)
                    .await;
            match dropped {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    anyhow::bail!("cannot drop database {database}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Drops databases left behind by runs whose process no longer exists.
    pub async fn drop_stale(&self) -> anyhow::Result<Vec<String>> {
        let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(PREFIX)
            .fetch_all(&self.pool)
            .await?;
        let mut dropped = Vec::new();
        for name in names {
            let pid = name.rsplit('_').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                self.drop_database(&name).await?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }
}

/// A local Postgres cluster, as `pg_ctlcluster` names it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub version: String,
    pub name: String,
    pub port: u16,
}

/// The local cluster serving the suite's server (`pg_lsclusters`, matched by port),
/// which `pg_ctlcluster` may stop and start; or why there is none.
pub fn restartable_cluster() -> Result<Cluster, String> {
    let base = server_url();
    let authority = base.split_once("://").map_or(base.as_str(), |(_, a)| a);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    if !matches!(host, "127.0.0.1" | "localhost") {
        return Err(format!("Postgres at {host} is not a local cluster"));
    }
    let port: u16 = port.parse().map_err(|_| format!("no port in {base}"))?;
    let listed = std::process::Command::new("pg_lsclusters")
        .arg("-h")
        .output()
        .map_err(|e| format!("pg_lsclusters is not available ({e}): not a Debian-style cluster"))?;
    let text = String::from_utf8_lossy(&listed.stdout);
    let Some((version, name, owner, data)) = text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 6 && f[2] == port.to_string())
            .then(|| (f[0].to_owned(), f[1].to_owned(), f[4].to_owned(), f[5].to_owned()))
    }) else {
        return Err(format!("no local cluster on port {port} in pg_lsclusters"));
    };
    if std::process::Command::new("pg_ctlcluster").arg("--help").output().is_err() {
        return Err("pg_ctlcluster is not installed".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next().unwrap_or("").to_owned()))
        })
        .unwrap_or_default();
    if uid != "0" {
        let data_owner = std::process::Command::new("stat")
            .args(["-c", "%u", &data])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if data_owner != uid {
            return Err(format!("not permitted: running as uid {uid}, neither root nor the cluster's owner ({owner})"));
        }
    }
    Ok(Cluster { version, name, port })
}

impl Cluster {
    /// `pg_ctlcluster <version> <name> <action>`.
    pub async fn ctl(&self, action: &str) -> anyhow::Result<()> {
        let output = tokio::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, &self.name, action])
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "pg_ctlcluster {} {} {action} failed ({}): {}{}",
            self.version,
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    pub fn ready(&self) -> bool {
        std::process::Command::new("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the cluster if it is down, and waits until it answers.
    pub fn ensure_running(&self) {
        if self.ready() {
            return;
        }
        eprintln!("faults: Postgres ({} {}) is down; starting it again", self.version, self.name);
        let _ = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, &self.name, "start"])
            .status();
        let started = Instant::now();
        while !self.ready() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Starts the cluster again, if it is down, when dropped (the restart scenario failed
/// half-way, or panicked).
pub struct PostgresGuard(pub Cluster);

impl Drop for PostgresGuard {
    fn drop(&mut self) {
        self.0.ensure_running();
    }
}
