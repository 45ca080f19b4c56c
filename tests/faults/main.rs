//! The fault suite (issue 8): the real `seam-access-sync` binary, as child processes,
//! under the faults production brings — SIGKILL, a Postgres restart, Seam down or
//! slow, duplicate and out-of-order deliveries, two replicas with one killed, SIGTERM
//! under load — driven by a Svix-like sender against a Seam stand-in. After each
//! scenario the counts must add up: every delivery acknowledged is stored exactly
//! once, every refused one was retried until accepted, every code's mirror row equals
//! what Seam holds, no dead letter, no claim left, never more claims held than
//! workers to serve them.
//!
//! `cargo test --test faults` runs the short version (about 1.5 minutes); `scripts/soak`
//! (`FAULTS_SOAK=1`) the long one. Arguments not starting with `-` select scenarios
//! by name (substring); `FAULTS_SEED=<n>` replays a run's random choices. Each
//! scenario gets its own database (`sas_faults_<scenario>_<pid>`, dropped after it),
//! and its service log is kept in `target/tmp/faults/<scenario>.log`.
//!
//! The suite never touches the developer's Postgres: it makes its own throwaway
//! cluster (`initdb` into a temporary directory, binaries from `pg_config --bindir`
//! or `/usr/lib/postgresql/<version>/bin`, run as the `postgres` OS user when the
//! suite runs as root), started on a free port of 127.0.0.1 with its socket in that
//! directory, and runs every scenario against it. The Postgres restart scenario stops
//! and starts that cluster only. At the end — also after a failure, a panic or an
//! interrupt — the cluster is stopped and its directory deleted; its server log is
//! kept in `target/tmp/faults/postgres.log`. Where `initdb` is not available, the
//! other scenarios run on the server of `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432`) and the restart scenario is skipped, with
//! the reason.

mod check;
mod db;
mod load;
mod scenarios;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use check::Summary;
use load::{Delivery, LoadSpec, Send};
use service::ServiceConfig;
use test_kit::StandIn;

/// The scenarios, in order: name and what it does.
const SCENARIOS: &[(&str, &str)] = &[
    ("kill_restart", "the service SIGKILLed mid-load and restarted, several times"),
    ("postgres_restart", "Postgres stopped and started mid-load: 503s, then recovery without a restart"),
    ("seam_down", "Seam refuses connections, then answers 500s, then comes back"),
    ("seam_slow", "Seam answers slowly: intake stays fast, worker concurrency holds"),
    ("duplicates", "every delivery sent 3 times, concurrently, in random order"),
    ("out_of_order", "several events per code, delivered in reverse or random order"),
    ("two_instances", "two instances on one database, one SIGKILLed mid-load for good"),
    ("graceful_shutdown", "SIGTERM under load: requests and fetches in flight finish, no claim left"),
    (
        "open_port",
        "1,000 dribbling connections and 20,000 invented methods; a valid webhook still answered; SIGTERM with connections open",
    ),
];

/// Sizes and timings: short (default) or soak (`FAULTS_SOAK=1`).
#[derive(Debug, Clone)]
pub struct Profile {
    pub soak: bool,
    /// Multiplies every scenario's delivery and code counts.
    pub scale: usize,
    /// First attempts per second of paced loads.
    pub rate: f64,
    pub senders: usize,
    pub kills: usize,
    /// How long Postgres stays stopped: longer than `lease_seconds`, so the claims a
    /// worker could not complete when it stopped have expired before the service can
    /// claim again (else they count as claims beyond what the workers can hold).
    pub postgres_outage: Duration,
    /// How long Seam refuses connections, then how long it answers 500s.
    pub seam_outage: Duration,
    pub seam_slow: Duration,
    pub drain_deadline: Duration,
    pub give_up_after: Duration,
    pub seam_timeout_ms: u64,
    pub lease_seconds: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Profile {
    fn from_env() -> Profile {
        let soak = std::env::var("FAULTS_SOAK").is_ok_and(|v| !v.is_empty() && v != "0");
        if soak {
            Profile {
                soak,
                scale: 6,
                rate: 100.0,
                senders: 32,
                kills: 8,
                postgres_outage: Duration::from_secs(15),
                seam_outage: Duration::from_secs(60),
                seam_slow: Duration::from_secs(2),
                drain_deadline: Duration::from_secs(600),
                give_up_after: Duration::from_secs(600),
                seam_timeout_ms: 5000,
                lease_seconds: 8,
                backoff_base_ms: 500,
                backoff_max_ms: 10_000,
            }
        } else {
            Profile {
                soak,
                scale: 1,
                rate: 50.0,
                senders: 16,
                kills: 3,
                postgres_outage: Duration::from_secs(4),
                seam_outage: Duration::from_secs(5),
                seam_slow: Duration::from_secs(1),
                drain_deadline: Duration::from_secs(120),
                give_up_after: Duration::from_secs(120),
                seam_timeout_ms: 2000,
                lease_seconds: 3,
                backoff_base_ms: 200,
                backoff_max_ms: 2000,
            }
        }
    }
}

/// What a scenario works with, and what it found.
pub struct Ctx {
    pub name: &'static str,
    pub profile: Profile,
    pub rng: StdRng,
    pub db_url: String,
    pub pool: PgPool,
    /// The suite's own cluster, which the restart scenario may stop and start; or why
    /// there is none.
    pub cluster: Result<Arc<db::Cluster>, String>,
    pub seam: StandIn,
    pub log: PathBuf,
    pub figures: Vec<(String, String)>,
    pub failures: Vec<String>,
    pub summary: Option<Summary>,
    pub skipped: Option<String>,
    /// The most claims (`claimed_until` in the future) seen held at once, sampled
    /// every 50 ms for the whole scenario.
    pub claims_max: Arc<AtomicI64>,
}

impl Ctx {
    pub fn figure(&mut self, name: impl Into<String>, value: impl ToString) {
        self.figures.push((name.into(), value.to_string()));
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.fail(what);
        }
    }

    /// The service's settings: short timings, catch-up and sweeps off, plus `extra`.
    pub fn service_config(&self, extra: &[(&str, &str)]) -> ServiceConfig {
        let p = &self.profile;
        let settings: Vec<(&str, String)> = vec![
            ("APP_SEAM__TIMEOUT_MS", p.seam_timeout_ms.to_string()),
            ("APP_SEAM__CONNECT_TIMEOUT_MS", "1000".into()),
            ("APP_WORKER__LEASE_SECONDS", p.lease_seconds.to_string()),
            ("APP_WORKER__BACKOFF_BASE_MS", p.backoff_base_ms.to_string()),
            ("APP_WORKER__BACKOFF_MAX_MS", p.backoff_max_ms.to_string()),
            ("APP_WORKER__POLL_INTERVAL_MS", "500".into()),
            ("APP_CATCH_UP__INTERVAL_SECONDS", "0".into()),
            ("APP_SWEEP__INTERVAL_SECONDS", "0".into()),
            ("APP_DATABASE__ACQUIRE_TIMEOUT_MS", "1000".into()),
            ("APP_DATABASE__MAX_CONNECTIONS", "10".into()),
            ("APP_DATABASE__CREATE_IF_MISSING", "false".into()),
        ];
        let config = ServiceConfig::new(service::BIN, &self.db_url, &self.seam.url())
            .api_key("seam_faults_test_key")
            .log_filter("warn")
            .log_file(&self.log);
        settings
            .into_iter()
            .chain(extra.iter().map(|(key, value)| (*key, (*value).to_owned())))
            .fold(config, |config, (key, value)| config.env(key, value))
    }

    /// A paced load of `groups` over `targets`.
    pub fn paced(&self, groups: Vec<Vec<Send>>, targets: Vec<String>) -> LoadSpec {
        LoadSpec {
            groups,
            targets,
            senders: self.profile.senders,
            rate: Some(self.profile.rate),
            give_up_after: self.profile.give_up_after,
        }
    }

    /// `deliveries` sends over `codes` codes picked at random, each with a new truth
    /// for its code set just before it is first sent.
    pub fn simple_plan(&mut self, deliveries: usize, codes: usize) -> Vec<Vec<Send>> {
        let codes: Vec<String> = (0..codes).map(|_| load::new_code()).collect();
        (0..deliveries)
            .map(|i| {
                // Every code gets at least one delivery.
                let code = if i < codes.len() {
                    &codes[i]
                } else {
                    &codes[rand::Rng::random_range(&mut self.rng, 0..codes.len())]
                };
                let delivery = Delivery::random(code, &mut self.rng);
                vec![Send { delivery, truth: Some(load::random_truth(&mut self.rng)) }]
            })
            .collect()
    }

    pub fn soak(&self) -> bool {
        self.profile.soak
    }
}

struct Outcome {
    index: usize,
    name: &'static str,
    summary: Option<Summary>,
    failures: Vec<String>,
    skipped: Option<String>,
    elapsed: Duration,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in SCENARIOS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    // Names select scenarios; libtest's options (and their values) are ignored.
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--skip" => skips.extend(iter.next().cloned()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                iter.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_owned()),
        }
    }
    let selected: Vec<(usize, &'static str, &'static str)> = SCENARIOS
        .iter()
        .enumerate()
        .map(|(i, (name, what))| (i + 1, *name, *what))
        .filter(|(_, name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .filter(|(_, name, _)| !skips.iter().any(|s| name.contains(s.as_str())))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run(selected))
}

async fn run(selected: Vec<(usize, &'static str, &'static str)>) -> ExitCode {
    seam_access_sync::install_tls_provider();
    let profile = Profile::from_env();
    let seed: u64 = std::env::var("FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    if selected.is_empty() {
        println!("fault suite: no scenario selected");
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    println!(
        "fault suite ({} mode, FAULTS_SEED={seed}), {} scenario(s), service {}",
        if profile.soak { "soak" } else { "short" },
        selected.len(),
        service::BIN
    );
    let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults");
    let _ = std::fs::create_dir_all(&log_dir);

    // The suite's own Postgres; removed when `_remove` drops, even on a panic, and by
    // the signal handler on an interrupt.
    let cluster = tokio::task::spawn_blocking({
        let keep_log = log_dir.join("postgres.log");
        move || db::Cluster::create(Some(keep_log)).map(Arc::new)
    })
    .await
    .unwrap_or_else(|e| Err(format!("creating the cluster panicked: {e}")));
    let _remove = cluster.as_ref().ok().map(|c| db::RemoveOnDrop(c.clone()));
    let base = match &cluster {
        Ok(c) => {
            println!("Postgres: the suite's own cluster ({}) on {}, in {}", c.version, c.url(), c.dir.display());
            tokio::spawn(remove_on_signal(c.clone()));
            c.url()
        }
        Err(reason) => {
            let base = db::server_url();
            println!("Postgres: cannot make the suite's own cluster ({reason}); using {base}, without a restart");
            base
        }
    };
    let cluster =
        cluster.map_err(|reason| format!("the suite has no Postgres cluster of its own to restart: {reason}"));

    let admin = match db::Admin::connect(base).await {
        Ok(admin) => admin,
        Err(e) => {
            println!("cannot start: {e:#}");
            println!("0 passed, {} failed", selected.len());
            return ExitCode::FAILURE;
        }
    };
    match admin.drop_stale().await {
        Ok(dropped) if !dropped.is_empty() => println!("dropped databases left by earlier runs: {dropped:?}"),
        Ok(_) => {}
        Err(e) => println!("could not look for stale databases: {e:#}"),
    }

    let started = Instant::now();
    let mut outcomes = Vec::new();
    for (index, name, what) in selected {
        println!("\n## {index}. {name}: {what}\n");
        let seed = seed.wrapping_add(index as u64);
        let outcome = run_scenario(index, name, &profile, seed, &admin, &cluster, &log_dir).await;
        print_outcome(&outcome, &log_dir);
        outcomes.push(outcome);
    }
    admin.close().await;

    println!(
        "\n## Summary ({} mode, {:.0} s)\n",
        if profile.soak { "soak" } else { "short" },
        started.elapsed().as_secs_f64()
    );
    println!("| scenario |{} result | time |", &Summary::HEADER[1..]);
    println!("|---|{}---|---:|", &Summary::RULE[1..]);
    for o in &outcomes {
        let row = o.summary.as_ref().map_or_else(|| "| – | – | – | – | – | – | – | – |".to_owned(), Summary::row);
        let result = match (&o.skipped, o.failures.is_empty()) {
            (Some(_), _) => "skipped",
            (None, true) => "pass",
            (None, false) => "FAIL",
        };
        println!("| {}. {} {} {result} | {:.0} s |", o.index, o.name, row, o.elapsed.as_secs_f64());
    }
    let failed = outcomes.iter().filter(|o| o.skipped.is_none() && !o.failures.is_empty()).count();
    let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
    let passed = outcomes.len() - failed - skipped;
    println!();
    if skipped > 0 {
        println!("{skipped} skipped");
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn run_scenario(
    index: usize,
    name: &'static str,
    profile: &Profile,
    seed: u64,
    admin: &db::Admin,
    cluster: &Result<Arc<db::Cluster>, String>,
    log_dir: &std::path::Path,
) -> Outcome {
    let started = Instant::now();
    let database = format!("{}{name}_{}", db::PREFIX, std::process::id());
    let log = log_dir.join(format!("{name}.log"));
    let _ = std::fs::write(&log, "");
    let mut outcome =
        Outcome { index, name, summary: None, failures: Vec::new(), skipped: None, elapsed: Duration::ZERO };

    let prepared = async {
        let db_url = admin.create(&database).await?;
        let pool =
            PgPoolOptions::new().max_connections(4).acquire_timeout(Duration::from_secs(10)).connect(&db_url).await?;
        queue_statistics_as_in_production(&pool).await?;
        let seam = StandIn::start().await?;
        anyhow::Ok(Ctx {
            name,
            profile: profile.clone(),
            rng: StdRng::seed_from_u64(seed),
            db_url,
            pool,
            cluster: cluster.clone(),
            seam,
            log: log.clone(),
            figures: Vec::new(),
            failures: Vec::new(),
            summary: None,
            skipped: None,
            claims_max: Arc::new(AtomicI64::new(0)),
        })
    }
    .await;
    match prepared {
        Err(e) => outcome.failures.push(format!("setting up: {e:#}")),
        Ok(ctx) => {
            let sampler = tokio::spawn(sample_claims(ctx.pool.clone(), ctx.claims_max.clone()));
            // In its own task, so a panic is one failed scenario; the services it
            // started are killed when their handles drop.
            let ran = tokio::spawn(async move {
                let mut ctx = ctx;
                let result = dispatch(&mut ctx).await;
                ctx.pool.close().await;
                (ctx, result)
            })
            .await;
            match ran {
                Ok((ctx, result)) => {
                    for (figure, value) in &ctx.figures {
                        println!("- {figure}: {value}");
                    }
                    outcome.failures = ctx.failures;
                    if let Err(e) = result {
                        outcome.failures.push(format!("{e:#}"));
                    }
                    outcome.summary = ctx.summary;
                    outcome.skipped = ctx.skipped;
                }
                Err(e) => outcome.failures.push(format!("the scenario panicked: {e}")),
            }
            sampler.abort();
        }
    }
    if let Err(e) = admin.drop_database(&database).await {
        outcome.failures.push(format!("cleaning up: {e:#}"));
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// On SIGINT or SIGTERM: kills the services, stops and deletes the suite's cluster,
/// then exits.
async fn remove_on_signal(cluster: Arc<db::Cluster>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let (name, code) = tokio::select! {
        _ = int.recv() => ("SIGINT", 130),
        _ = term.recv() => ("SIGTERM", 143),
    };
    eprintln!("faults: {name}: killing the services, removing the suite's Postgres cluster");
    let _ = tokio::task::spawn_blocking(move || {
        service::kill_all();
        cluster.remove();
    })
    .await;
    std::process::exit(code);
}

/// A queue table is nearly empty most of its life, and so are its statistics: they
/// are taken here while it holds one row, so the load finds the planner believing
/// the queue tiny (the state in which one claim statement once claimed many rows).
async fn queue_statistics_as_in_production(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO access_code_refetches (access_code_id, endpoint) VALUES ('statistics-probe', 'managed')")
        .execute(pool)
        .await?;
    sqlx::query("ANALYZE access_code_refetches").execute(pool).await?;
    sqlx::query("DELETE FROM access_code_refetches WHERE access_code_id = 'statistics-probe'").execute(pool).await?;
    Ok(())
}

/// Keeps the most claims held at once (errors, e.g. while Postgres is down, skip a
/// sample).
async fn sample_claims(pool: PgPool, max: Arc<AtomicI64>) {
    loop {
        let held: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM access_code_refetches WHERE claimed_until > now()")
                .fetch_one(&pool)
                .await;
        if let Ok(held) = held {
            max.fetch_max(held, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dispatch(ctx: &mut Ctx) -> anyhow::Result<()> {
    match ctx.name {
        "kill_restart" => scenarios::kill_restart(ctx).await,
        "postgres_restart" => scenarios::postgres_restart(ctx).await,
        "seam_down" => scenarios::seam_down(ctx).await,
        "seam_slow" => scenarios::seam_slow(ctx).await,
        "duplicates" => scenarios::duplicates(ctx).await,
        "out_of_order" => scenarios::out_of_order(ctx).await,
        "two_instances" => scenarios::two_instances(ctx).await,
        "graceful_shutdown" => scenarios::graceful_shutdown(ctx).await,
        "open_port" => scenarios::open_port(ctx).await,
        other => anyhow::bail!("no scenario named {other}"),
    }
}

fn print_outcome(outcome: &Outcome, log_dir: &std::path::Path) {
    if let Some(summary) = &outcome.summary {
        println!("\n{}\n{}\n{}", Summary::HEADER, Summary::RULE, summary.row());
    }
    match (&outcome.skipped, outcome.failures.is_empty()) {
        (Some(reason), _) => println!("\nskipped: {reason}"),
        (None, true) => println!("\npass ({:.1} s)", outcome.elapsed.as_secs_f64()),
        (None, false) => {
            println!("\nFAIL ({:.1} s):", outcome.elapsed.as_secs_f64());
            for failure in &outcome.failures {
                println!("  - {failure}");
            }
            let log = log_dir.join(format!("{}.log", outcome.name));
            println!("  service log: {}\n{}", log.display(), service::log_tail(&log, 20));
        }
    }
}
