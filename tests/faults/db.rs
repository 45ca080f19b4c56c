//! Databases (one per scenario, created by `seam-access-sync migrate`, dropped at the
//! end), and the suite's own throwaway Postgres cluster: `initdb` into a temporary
//! directory, started on a free port of 127.0.0.1 with its socket in that directory,
//! restarted by the Postgres restart scenario, stopped and deleted at the end (also
//! when a scenario fails or panics, or the suite is interrupted; a directory left by
//! a run that was killed is removed by the next one). The developer's own Postgres
//! is never stopped, restarted or reconfigured: without `initdb` the suite falls back
//! to the server of `TEST_DATABASE_URL` for the other scenarios and skips the restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::service::BIN;

/// Every database this suite makes starts with this.
pub const PREFIX: &str = "sas_faults_";

/// The server the suite falls back to when it cannot make its own cluster:
/// `TEST_DATABASE_URL` (any database name in it is replaced), else the local one.
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
    /// `base`: the server's URL without a database name.
    pub async fn connect(base: String) -> anyhow::Result<Admin> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&format!("{base}/postgres"))
            .await
            .map_err(|e| anyhow::anyhow!("Postgres does not answer at {base}: {e}"))?;
        Ok(Admin { base, pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
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

/// Names of the suite's cluster directories: `<temp dir>/sas-faults-pg-<pid>-<nanos>`.
const CLUSTER_DIR_PREFIX: &str = "sas-faults-pg-";

/// The suite's own Postgres cluster, in a temporary directory, for this run only.
/// Stopped and deleted by [`Cluster::remove`], which dropping it calls.
#[derive(Debug)]
pub struct Cluster {
    /// From `initdb --version`, e.g. `PostgreSQL 15.14`.
    pub version: String,
    pub port: u16,
    /// The temporary directory: `data/`, the server's log and its socket.
    pub dir: PathBuf,
    bindir: PathBuf,
    /// Run the Postgres binaries as the `postgres` OS user (this process is root,
    /// which `initdb` and `postgres` refuse to run as).
    as_postgres: bool,
    /// Where the server's log is copied before the directory is deleted.
    keep_log: Option<PathBuf>,
    removed: AtomicBool,
}

impl Cluster {
    /// `initdb`s a new cluster into a new temporary directory and starts it on a free
    /// port; or says why it cannot. Directories left by killed runs are removed first.
    pub fn create(keep_log: Option<PathBuf>) -> Result<Cluster, String> {
        let bindir = find_bindir()?;
        let as_postgres = is_root();
        if as_postgres && Command::new("runuser").arg("--help").output().is_err() {
            return Err("running as root, and runuser (to run initdb as the postgres user) is not available".into());
        }
        remove_stale(&bindir, as_postgres);

        let dir = std::env::temp_dir().join(format!(
            "{CLUSTER_DIR_PREFIX}{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cluster = Cluster {
            version: String::new(),
            port: 0,
            dir,
            bindir,
            as_postgres,
            keep_log,
            removed: AtomicBool::new(false),
        };
        // From here on, a failure deletes the directory (the drop of `cluster`).
        cluster.init().map_err(|e| format!("{e:#}"))?;
        Ok(cluster)
    }

    fn init(&mut self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        if self.as_postgres {
            let id = |flag: &str| -> anyhow::Result<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output()?;
                anyhow::ensure!(out.status.success(), "there is no postgres OS user to run initdb as");
                Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
            };
            std::os::unix::fs::chown(&self.dir, Some(id("-u")?), Some(id("-g")?))?;
        }
        let version = self.pg("initdb", &["--version"])?;
        let version = String::from_utf8_lossy(&version.stdout);
        self.version = match version.split_once("(PostgreSQL) ") {
            Some((_, v)) => format!("PostgreSQL {}", v.split_whitespace().next().unwrap_or_default()),
            None => version.trim().to_owned(),
        };
        let data = self.data();
        let out = self.pg(
            "initdb",
            &["-D", path_str(&data)?, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
        )?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Retried on another port should the free one be taken in the meantime.
        let mut last = None;
        for _ in 0..3 {
            self.port = crate::service::free_port();
            self.configure()?;
            match self.start_blocking() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the cluster did not start")))
    }

    /// The settings, appended to `postgresql.conf` (the last one wins): sized for the
    /// suite's load — at most two service instances, each with a pool of 10 plus a
    /// LISTEN connection, the suite's own pools (6) and a `migrate` — with room to spare.
    fn configure(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let conf = self.data().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new().append(true).open(&conf)?;
        write!(
            file,
            "\n# seam-access-sync fault suite\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 60\n\
             shared_buffers = 16MB\n\
             fsync = off\n\
             full_page_writes = off\n",
            self.port,
            path_str(&self.dir)?
        )?;
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:<port>`, without a database name.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Runs the Postgres binary `name` (as the postgres OS user when this process is root).
    fn pg(&self, name: &str, args: &[&str]) -> anyhow::Result<Output> {
        Ok(pg_command(&self.bindir, self.as_postgres, name, args).current_dir(&self.dir).output()?)
    }

    /// `pg_ctl <args> -D <data>`; an error carries its output.
    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.data();
        let mut all = args.to_vec();
        all.extend(["-D", path_str(&data)?]);
        let out = self.pg("pg_ctl", &all)?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl {} failed ({}): {}{}\nserver log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            crate::service::log_tail(&self.log(), 10)
        );
        Ok(())
    }

    fn start_blocking(&self) -> anyhow::Result<()> {
        let log = self.log();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", path_str(&log)?])
    }

    /// Starts the cluster (on its port and data directory) and waits until it answers.
    pub async fn start(self: &std::sync::Arc<Self>) -> anyhow::Result<()> {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || cluster.start_blocking()).await?
    }

    /// A fast shutdown (`pg_ctl stop -m fast`), waiting until it is down.
    pub async fn stop(self: &std::sync::Arc<Self>) -> anyhow::Result<()> {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || cluster.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"])).await?
    }

    pub fn ready(&self) -> bool {
        let local = self.bindir.join("pg_isready");
        Command::new(if local.is_file() { local } else { PathBuf::from("pg_isready") })
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the cluster if it is down (the restart scenario failed half-way).
    pub fn ensure_running(&self) {
        if self.removed.load(Ordering::SeqCst) || self.ready() {
            return;
        }
        eprintln!("faults: the suite's Postgres (port {}) is down; starting it again", self.port);
        if let Err(e) = self.start_blocking() {
            eprintln!("faults: could not start it: {e:#}");
        }
    }

    /// Stops the cluster (`pg_ctl stop -m immediate`) and deletes its directory, keeping
    /// a copy of the server's log. Once; later calls do nothing.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.data().join("postmaster.pid").exists()
            && let Err(e) = self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "immediate"])
        {
            eprintln!("faults: could not stop the suite's Postgres: {e:#}");
        }
        if let Some(keep) = &self.keep_log {
            let _ = std::fs::copy(self.log(), keep);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("faults: could not delete {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Starts the cluster again, if it is down, when dropped (the restart scenario failed
/// half-way, or panicked).
pub struct PostgresGuard(pub std::sync::Arc<Cluster>);

impl Drop for PostgresGuard {
    fn drop(&mut self) {
        self.0.ensure_running();
    }
}

/// Stops and deletes the cluster when dropped: at the end of the run, also when it
/// unwinds from a panic.
pub struct RemoveOnDrop(pub std::sync::Arc<Cluster>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// The directory of `initdb`, `pg_ctl` and `postgres`: `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/<version>/bin`, else wherever `initdb` is on `PATH`.
fn find_bindir() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if let Ok(initdb) = std::fs::canonicalize(dir.join("initdb"))
            && let Some(dir) = initdb.parent()
            && has_tools(dir)
        {
            return Ok(dir.to_owned());
        }
    }
    Err("initdb is not available (neither `pg_config --bindir`, /usr/lib/postgresql/*/bin nor PATH has \
         initdb, pg_ctl and postgres)"
        .into())
}

fn pg_command(bindir: &Path, as_postgres: bool, name: &str, args: &[&str]) -> Command {
    let bin = bindir.join(name);
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    command.args(args).stdin(Stdio::null());
    command
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().ok_or_else(|| anyhow::anyhow!("not UTF-8: {}", path.display()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| Some(l.strip_prefix("Uid:")?.split_whitespace().nth(1)? == "0")))
        .unwrap_or(false)
}

/// Stops and deletes the clusters of earlier runs whose process no longer exists
/// (killed before they could remove their own).
fn remove_stale(bindir: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CLUSTER_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        let data = dir.join("data");
        if data.join("postmaster.pid").exists()
            && let Some(data) = data.to_str()
        {
            let _ =
                pg_command(bindir, as_postgres, "pg_ctl", &["stop", "-w", "-t", "60", "-m", "immediate", "-D", data])
                    .current_dir(&dir)
                    .output();
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => println!("removed the Postgres cluster left by an earlier run: {}", dir.display()),
            Err(e) => println!("could not remove {} (left by an earlier run): {e}", dir.display()),
        }
    }
}
