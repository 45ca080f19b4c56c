//! The benchmark suite: `cargo bench --bench suite` (full, ~10 min after the build)
//! or `cargo bench --bench suite -- --quick` (~3–4 min). Options after `--`:
//! `--quick`, `--secs N` (each load run), `--reps N` (runs per figure, default 3),
//! `--load-rule gap|1min` (what decides "machine busy", below),
//! `--print-pgbench-script` / `--print-minimal-script`.
//!
//! On a throwaway database of the local Postgres it runs, side by side:
//! - the release binary in `run_mode = server` (intake only),
//! - `pgbench` running the *minimal* durable work of one delivery per transaction
//!   (insert the event row under its unique delivery id, upsert one job row per
//!   code; no NOTIFY) on two tables of its own, and, as a second line, the
//!   service's own statement for a batch of one delivery (`ENQUEUE_SQL`, no
//!   `pg_notify`), and as a third, the minimal work as one statement (the best a
//!   receiver committing each delivery alone can do),
//! - the Node receiver of `benches/node-receiver/` (express + `@seamapi/webhook` +
//!   `pg`, written from Seam's docs, the same two minimal statements per delivery),
//! - the binary in `run_mode = all` with a Seam stand-in answering at once (end to
//!   end: intake, fetch, mirror), with Seam refusing connections, and with Seam
//!   answering 503 to everything,
//!
//! interleaved per repetition (service c8, pgbench c8, Node c8, own-SQL pgbench c8,
//! one-statement pgbench c8,
//! the same at c32, then end to end and both outages at c32), so a subject and its
//! baseline run seconds apart. Each figure is the median of `--reps` runs (the runs
//! are printed too). The load generator (benches/suite/load.rs) is the same for the
//! service and Node: deliveries built and signed before the clock starts, one
//! keep-alive connection per concurrent sender. CPU per delivery is the subject
//! process's utime + stime (`/proc/<pid>/stat`) over the run ÷ deliveries accepted.
//!
//! "Machine busy": before each run the suite sits idle for a moment and measures how
//! many tasks were runnable (the load, over that moment) and how many cores were
//! busy; a figure whose runs started with a load above 1.5 prints "machine busy
//! (load X)" instead of its ratio. The kernel's 1-minute load average is printed
//! before and after every run as well, but it cannot be the rule by default: it is
//! a minute-long average, and the suite's own previous runs (which saturate both
//! cores) keep it above 1.5 on a quiet machine. `--load-rule 1min` applies it anyway.
//!
//! Nothing here asserts a time: it reports.

#[path = "suite/load.rs"]
mod load;
#[path = "suite/machine.rs"]
mod machine;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use test_kit::logs::LogBuffer;
use test_kit::process::{Output, Process};
use test_kit::{Mode, SECRET, Service, ServiceConfig, StandIn, eventually_within};

use load::{LoadResult, closed_loop, deliveries, delivery};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const WEBHOOK_PATH: &str = "/webhooks/seam";
/// Distinct codes the load is spread over.
const CODES: usize = 1000;
/// Keep-alive connections of an open-loop run: at the half rate (~7,000/s on the
/// 2-core machine) 256 in flight is a 36 ms answer, far past the latency targets.
const OPEN_LOOP_CONNECTIONS: usize = 256;
/// A run started with more load than this is "machine busy".
const BUSY_LOAD: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum LoadRule {
    /// Runnable tasks over the idle moment before the run.
    Gap,
    /// The kernel's 1-minute load average before the run.
    OneMinute,
}

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    /// Length of each load run.
    secs: u64,
    reps: usize,
    /// The idle moment before each run.
    gap: Duration,
    rule: LoadRule,
    /// `--latency-at RATE`: only the open-loop ack latency, at RATE deliveries a second.
    latency_at: Option<f64>,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let quick = args.iter().any(|a| a == "--quick");
        Opts {
            quick,
            secs: value("--secs").and_then(|v| v.parse().ok()).unwrap_or(if quick { 3 } else { 10 }),
            reps: value("--reps").and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            gap: if quick { Duration::from_millis(600) } else { Duration::from_secs(1) },
            rule: match value("--load-rule").as_deref() {
                Some("1min") => LoadRule::OneMinute,
                _ => LoadRule::Gap,
            },
            latency_at: value("--latency-at").and_then(|v| v.parse().ok()),
        }
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.secs)
    }
}

// ---------------------------------------------------------------------------
// The two pgbench baselines.

/// The minimal durable work of one delivery, on tables of its own (the Node
/// receiver uses the same tables and statements).
const MINIMAL_TABLES_SQL: &str = "
CREATE TABLE bench_min_events (delivery_id text PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE bench_min_jobs (code text PRIMARY KEY, requests bigint NOT NULL, updated_at timestamptz NOT NULL);
";

/// Per transaction: one event row under a new delivery id, one job upsert for a
/// code among `codes`; no NOTIFY.
fn minimal_script(codes: usize) -> String {
    let payload = load::event_body("ac_bench").replace('\'', "''");
    format!(
        "\\set code random(0, {last})\n\
         BEGIN;\n\
         INSERT INTO bench_min_events (delivery_id, payload) VALUES ('msg_' || gen_random_uuid()::text, '{payload}'::jsonb);\n\
         INSERT INTO bench_min_jobs AS j (code, requests, updated_at) VALUES ('ac_' || :code, 1, now()) \
         ON CONFLICT (code) DO UPDATE SET requests = j.requests + 1, updated_at = now();\n\
         COMMIT;\n",
        last = codes - 1
    )
}

/// The same minimal work as one statement (the job upsert in a CTE after the event's
/// insert), autocommitted: one round trip instead of four, the best a receiver that
/// commits each delivery on its own can do (a third line, not the target's baseline).
fn minimal_one_statement_script(codes: usize) -> String {
    let payload = load::event_body("ac_bench").replace('\'', "''");
    format!(
        "\\set code random(0, {last})\n\
         WITH event AS (INSERT INTO bench_min_events (delivery_id, payload) \
         VALUES ('msg_' || gen_random_uuid()::text, '{payload}'::jsonb) RETURNING 1) \
         INSERT INTO bench_min_jobs AS j (code, requests, updated_at) VALUES ('ac_' || :code, 1, now()) \
         ON CONFLICT (code) DO UPDATE SET requests = j.requests + 1, updated_at = now();\n",
        last = codes - 1
    )
}

/// Per transaction, exactly the statement the service's intake runs for a batch
/// of one new delivery (`ENQUEUE_SQL` with the event's row and its re-fetch, as
/// one-element arrays, no NOTIFY), on `codes` distinct codes: one round trip,
/// autocommitted.
fn own_sql_script(codes: usize) -> String {
    let payload = load::event_body("ac_bench").replace('\'', "''");
    // $20 before $2: replacing in reverse order keeps "$2" from eating "$20".
    let bind = |sql: &str, params: &[String]| {
        params
            .iter()
            .enumerate()
            .rev()
            .fold(sql.to_owned(), |sql, (i, value)| sql.replace(&format!("${}", i + 1), value))
    };
    let statement = bind(
        seam_access_sync::store::queue::ENQUEUE_SQL,
        &[
            // The re-fetch.
            "ARRAY['ac_' || :code]".into(),
            "ARRAY['managed']".into(),
            "ARRAY['device_bench']".into(),
            "ARRAY['ws_bench']".into(),
            "ARRAY[1]".into(),
            "ARRAY[gen_random_uuid()::text]".into(),
            "ARRAY['access_code.set_on_device']".into(),
            "ARRAY[now()]".into(),
            "NULL".into(),
            "ARRAY['ca_bench']".into(),
            // The event.
            "ARRAY[gen_random_uuid()::text]".into(),
            "ARRAY['msg_' || gen_random_uuid()::text]".into(),
            "ARRAY['access_code.set_on_device']".into(),
            "ARRAY['ac_' || :code]".into(),
            "ARRAY['device_bench']".into(),
            "ARRAY['ws_bench']".into(),
            "ARRAY[now()]".into(),
            "ARRAY['refetch']".into(),
            format!("ARRAY['{payload}']"),
            "ARRAY['ca_bench']".into(),
        ],
    );
    assert!(!statement.contains('$'), "every parameter of the service's SQL is bound");
    format!("\\set code random(0, {})\n{};\n", codes - 1, statement.trim())
}

fn pgbench_program() -> String {
    if Command::new("pgbench").arg("--version").output().is_ok() {
        return "pgbench".to_owned();
    }
    let found = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|versions| {
        versions.filter_map(Result::ok).map(|v| v.path().join("bin/pgbench")).find(|p| p.exists())
    });
    found.map_or_else(|| "pgbench".to_owned(), |p| p.display().to_string())
}

/// `pgbench -n -c C -j 2 -T secs -f script`: its tps.
fn pgbench(db_url: &str, script: &str, concurrency: usize, secs: u64) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!("sas_pgbench_{}.sql", std::process::id()));
    std::fs::write(&path, script)?;
    let output = Command::new(pgbench_program())
        .args(["-n", "-c", &concurrency.to_string(), "-j", "2", "-T", &secs.to_string(), "-f"])
        .arg(&path)
        .arg(db_url)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run pgbench (Debian: postgresql-client): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .ok_or_else(|| anyhow::anyhow!("pgbench printed no tps: {text}\n{}", String::from_utf8_lossy(&output.stderr)))
}

// ---------------------------------------------------------------------------
// The subjects.

async fn start_service(db_url: &str, seam_url: &str, run_mode: &str) -> anyhow::Result<(Service, Duration)> {
    // Logged as in production (the compiled-in `log.level = "info"`, JSON lines), not
    // at the test kit's quieter `warn`: what a line costs is part of the figure.
    let config = ServiceConfig::new(env!("CARGO_BIN_EXE_seam-access-sync"), db_url, seam_url)
        .api_key("seam_bench_key")
        .run_mode(run_mode)
        .log_filter("info")
        .env("APP_LOG__FORMAT", "json");
    let started = Instant::now();
    let service = Service::start(config).await?;
    Ok((service, started.elapsed()))
}

fn addr_of(service: &Service) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], service.port))
}

struct Node {
    process: Process,
    addr: SocketAddr,
}

impl Node {
    fn pid(&self) -> u32 {
        self.process.pid().expect("the Node receiver runs")
    }
}

/// `node server.js` in benches/node-receiver (after `npm ci` when its
/// node_modules is missing), once it listens.
async fn start_node(db_url: &str) -> anyhow::Result<Node> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/node-receiver");
    if !dir.join("node_modules").exists() {
        eprintln!("npm ci in {}", dir.display());
        let status = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status()?;
        anyhow::ensure!(status.success(), "npm ci failed: {status}");
    }
    let mut command = Command::new("node");
    command
        .arg("server.js")
        .current_dir(&dir)
        .env("PORT", "0")
        .env("DATABASE_URL", db_url)
        .env("WEBHOOK_SECRET", SECRET)
        .env("POOL_SIZE", "10");
    let mut process = Process::spawn("the Node receiver", command, LogBuffer::default(), Output::default(), None)?;
    let port = process
        .line(Duration::from_secs(30), |l| l.strip_prefix("node-receiver listening ")?.trim().parse::<u16>().ok())
        .await?;
    Ok(Node { process, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
}

// ---------------------------------------------------------------------------
// Runs and their samples.

/// The machine around one run.
#[derive(Debug, Clone)]
struct RunInfo {
    label: String,
    load_before: [f64; 3],
    load_after: [f64; 3],
    quiet: machine::Quiet,
    /// The load that made this run "machine busy".
    busy: Option<f64>,
}

/// One value of a figure, and the load that made one of its runs busy.
#[derive(Debug, Clone, Copy)]
struct Sample {
    value: f64,
    busy: Option<f64>,
}

struct Bench {
    opts: Opts,
    db_url: String,
    pool: PgPool,
    runs: Vec<RunInfo>,
    samples: BTreeMap<String, Vec<Sample>>,
    notes: Vec<String>,
    /// The highest delivery rate seen so far (sizes the pre-built deliveries).
    best_rate: f64,
}

/// What a load run against a process measured.
struct Measured {
    load: LoadResult,
    /// The subject's CPU µs per accepted delivery.
    cpu_per_delivery: f64,
    /// The bench process's (generator's) CPU µs per accepted delivery.
    generator_per_delivery: f64,
    /// From the first delivery sent until the end (the queue drained, when asked).
    whole: Duration,
}

impl Bench {
    /// Idle for a moment, and the machine's state before a run.
    async fn before(&self) -> ([f64; 3], machine::Quiet) {
        let quiet = machine::quiet(self.opts.gap).await;
        (machine::loadavg(), quiet)
    }

    /// Records a run that started after `before`.
    fn after(&mut self, label: &str, (load_before, quiet): ([f64; 3], machine::Quiet)) -> RunInfo {
        let observed = match self.opts.rule {
            LoadRule::Gap => quiet.runnable,
            LoadRule::OneMinute => load_before[0],
        };
        let info = RunInfo {
            label: label.to_owned(),
            load_before,
            load_after: machine::loadavg(),
            quiet,
            busy: (observed > BUSY_LOAD).then_some(observed),
        };
        eprintln!(
            "  {label}: load before {:.2}, after {:.2}; idle moment: {:.2} runnable, {:.2} cores busy",
            load_before[0], info.load_after[0], quiet.runnable, quiet.busy_cores
        );
        self.runs.push(info.clone());
        info
    }

    fn sample(&mut self, key: &str, value: f64, runs: &[&RunInfo]) {
        let busy = runs.iter().filter_map(|r| r.busy).reduce(f64::max);
        self.samples.entry(key.to_owned()).or_default().push(Sample { value, busy });
    }

    fn values(&self, key: &str) -> Vec<Sample> {
        self.samples.get(key).cloned().unwrap_or_default()
    }

    /// Empty tables (every run starts from the same state) and a checkpoint (none
    /// falls in the middle of one subject's run more than another's).
    ///
    /// A service just started runs its start-up jobs (the sweeps) meanwhile, whose
    /// statements take the same tables' locks in another order: Postgres may end the
    /// `TRUNCATE` as a deadlock, and it is run again.
    async fn reset(&self) -> anyhow::Result<()> {
        const SQL: &str = "TRUNCATE seam_events, access_code_refetches, access_codes, access_code_history, \
                           bench_min_events, bench_min_jobs; CHECKPOINT";
        for _ in 0..10 {
            match sqlx::raw_sql(SQL).execute(&self.pool).await {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40P01") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                result => return Ok(result.map(drop)?),
            }
        }
        anyhow::bail!("TRUNCATE deadlocked ten times in a row")
    }

    async fn wait_drained(&self) -> anyhow::Result<()> {
        let pool = self.pool.clone();
        eventually_within(Duration::from_secs(300), "the re-fetch queue to drain", move || {
            let pool = pool.clone();
            async move {
                let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM access_code_refetches")
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
                if pending == 0 { Ok(()) } else { Err(format!("{pending} re-fetches pending")) }
            }
        })
        .await;
        Ok(())
    }

    /// Deliveries enough for a timed run at up to three times the best rate seen, and
    /// at least 15,000 a second (concurrency 32 ran out at 11,500/s after 8 ran 4,400/s).
    fn budget(&self) -> usize {
        (self.best_rate * 3.0).max(15_000.0) as usize * self.opts.secs as usize
    }

    /// A timed closed-loop run at `concurrency` against the process `pid` on
    /// `addr`; with `drain`, the CPU is read again once the re-fetch queue is empty.
    async fn load_run(
        &mut self,
        label: &str,
        addr: SocketAddr,
        pid: u32,
        concurrency: usize,
        drain: bool,
    ) -> anyhow::Result<(Measured, RunInfo)> {
        self.reset().await?;
        let requests = deliveries(addr, WEBHOOK_PATH, self.budget(), CODES);
        let before = self.before().await;
        let (cpu0, self0) = (machine::cpu_us(pid), machine::cpu_us(std::process::id()));
        let sending = Instant::now();
        let load = closed_loop(addr, requests, concurrency, Some(self.opts.duration())).await;
        let self1 = machine::cpu_us(std::process::id());
        if drain {
            self.wait_drained().await?;
        }
        let cpu1 = machine::cpu_us(pid);
        let whole = sending.elapsed();
        let info = self.after(label, before);
        let accepted = load.accepted.max(1) as f64;
        let measured = Measured {
            cpu_per_delivery: (cpu1 - cpu0) / accepted,
            generator_per_delivery: (self1 - self0) / accepted,
            whole,
            load,
        };
        self.best_rate = self.best_rate.max(measured.load.rate());
        eprintln!(
            "    {:.0}/s ({} accepted, {} failed{}), p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU/delivery (generator {:.0} µs)",
            measured.load.rate(),
            measured.load.accepted,
            measured.load.failed,
            if measured.load.ran_out { ", ran out of deliveries" } else { "" },
            measured.load.latency_ms(0.5),
            measured.load.latency_ms(0.99),
            measured.cpu_per_delivery,
            measured.generator_per_delivery
        );
        if let Some(failure) = &measured.load.first_failure {
            eprintln!("    first failure: {failure}");
        }
        if measured.load.ran_out {
            self.notes.push(format!("{label}: the generator ran out of pre-built deliveries before the time was up"));
        }
        if measured.load.failed > 0 {
            self.notes.push(format!(
                "{label}: {} deliveries not accepted (first: {})",
                measured.load.failed,
                measured.load.first_failure.clone().unwrap_or_default()
            ));
        }
        Ok((measured, info))
    }

    /// Prints an open-loop run's figures; notes what it did not deliver on time or
    /// at all.
    fn open_loop_notes(&mut self, label: &str, sent: &load::OpenLoopResult, n: usize) {
        eprintln!(
            "    {} of {n} accepted, p50 {:.2} ms, p99 {:.2} ms, {} sent over 2 ms late",
            sent.load.accepted,
            sent.load.latency_ms(0.5),
            sent.load.latency_ms(0.99),
            sent.late
        );
        if sent.load.accepted < n as u64 {
            self.notes.push(format!(
                "{label}: {} of {n} deliveries not accepted (first: {})",
                n as u64 - sent.load.accepted,
                sent.load.first_failure.clone().unwrap_or_default()
            ));
        }
        if sent.late * 100 > n as u64 {
            self.notes.push(format!("{label}: {} of {n} deliveries sent over 2 ms after they were due", sent.late));
        }
    }

    async fn pgbench_run(&mut self, label: &str, script: &str, concurrency: usize) -> anyhow::Result<(f64, RunInfo)> {
        self.reset().await?;
        let before = self.before().await;
        let (db_url, secs, script) = (self.db_url.clone(), self.opts.secs, script.to_owned());
        let tps = tokio::task::spawn_blocking(move || pgbench(&db_url, &script, concurrency, secs)).await??;
        let info = self.after(label, before);
        eprintln!("    {tps:.0} tps");
        Ok((tps, info))
    }
}

// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--print-pgbench-script") {
        print!("{}", own_sql_script(CODES));
        return Ok(());
    }
    if std::env::args().any(|a| a == "--print-minimal-script") {
        print!("{}", minimal_script(CODES));
        return Ok(());
    }
    let opts = Opts::parse();
    seam_access_sync::install_tls_provider();
    // Every subject (the service, pgbench, the Node receiver) reaches the local
    // Postgres the same way: over loopback without TLS, as a database on the same
    // host or in a sidecar is reached. (libpq and sqlx would otherwise negotiate TLS
    // with a server that offers it, and node-postgres would not: BENCHMARKS.md
    // shows what TLS costs the service.)
    let db_url = format!("{SERVER}/sas_bench_{}?sslmode=disable", std::process::id());
    Postgres::create_database(&db_url).await?;
    let started = Instant::now();
    let loads_at_start = machine::loadavg();
    let result = run(&db_url, opts.clone()).await;
    let loads_at_end = machine::loadavg();
    test_kit::process::kill_all();
    let _ = Postgres::force_drop_database(&db_url).await;
    let (bench, rows, machine_lines) = result?;
    print_report(&bench, &rows, &machine_lines, loads_at_start, loads_at_end, started.elapsed());
    Ok(())
}

/// What a figure's median must satisfy (none: reported only).
type Check = Option<fn(f64) -> bool>;

struct Row {
    figure: String,
    measured: String,
    target: String,
    verdict: String,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// "median (run 1, run 2, run 3)", each value through `fmt`.
fn three(samples: &[Sample], fmt: impl Fn(f64) -> String) -> String {
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    if values.is_empty() {
        return "not measured".to_owned();
    }
    let each: Vec<String> = values.iter().map(|v| fmt(*v)).collect();
    if values.len() == 1 { fmt(values[0]) } else { format!("{} ({})", fmt(median(&values)), each.join(", ")) }
}

fn busiest(samples: &[Sample]) -> Option<f64> {
    samples.iter().filter_map(|s| s.busy).reduce(f64::max)
}

fn pass(ok: bool) -> String {
    if ok { "pass".to_owned() } else { "miss".to_owned() }
}

/// A row whose verdict compares the median with `ok`; marked when a run was busy.
fn row(figure: impl Into<String>, samples: &[Sample], fmt: impl Fn(f64) -> String, target: &str, ok: Check) -> Row {
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    let verdict = match (ok, values.is_empty()) {
        (_, true) => "—".to_owned(),
        (None, _) => "—".to_owned(),
        (Some(ok), _) => pass(ok(median(&values))),
    };
    let verdict = match busiest(samples) {
        Some(load) if verdict != "—" => format!("{verdict} (machine busy, load {load:.1})"),
        _ => verdict,
    };
    Row { figure: figure.into(), measured: three(samples, fmt), target: target.to_owned(), verdict }
}

/// A ratio row: "machine busy (load X)" instead of the ratio when a run was busy.
fn ratio_row(figure: impl Into<String>, samples: &[Sample], raw: String, target: &str, ok: Check) -> Row {
    let fmt = |v: f64| format!("{v:.2}×");
    match busiest(samples) {
        Some(load) => Row {
            figure: figure.into(),
            measured: format!("machine busy (load {load:.1}); raw: {raw}"),
            target: target.to_owned(),
            verdict: "—".to_owned(),
        },
        None => {
            let mut r = row(figure, samples, fmt, target, ok);
            r.measured = format!("{}; raw: {raw}", r.measured);
            r
        }
    }
}

fn rate(v: f64) -> String {
    format!("{v:.0}/s")
}
fn tps(v: f64) -> String {
    format!("{v:.0} tps")
}
fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}
fn us(v: f64) -> String {
    format!("{v:.0} µs")
}
fn count(v: f64) -> String {
    format!("{v:.0}")
}

async fn run(db_url: &str, opts: Opts) -> anyhow::Result<(Bench, Vec<Row>, Vec<String>)> {
    let pool = PgPoolOptions::new().max_connections(2).connect(db_url).await?;
    seam_access_sync::store::migrate(&pool).await?;
    sqlx::raw_sql(MINIMAL_TABLES_SQL).execute(&pool).await?;

    let pg_version: String = sqlx::query_scalar("SELECT version()").fetch_one(&pool).await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections') ORDER BY name",
    )
    .fetch_all(&pool)
    .await?;
    let machine_lines = vec![
        format!(
            "{} CPUs ({}), {} clock ticks/s",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            machine::cpu_model(),
            machine::clock_ticks()
        ),
        pg_version,
        format!(
            "Postgres settings: {}",
            settings.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
        ),
        format!(
            "{}; {}",
            machine::version_of("rustc", &["--version"]),
            machine::version_of(&pgbench_program(), &["--version"])
        ),
        format!("node {}", machine::version_of("node", &["--version"])),
    ];
    for line in &machine_lines {
        eprintln!("{line}");
    }

    let mut bench = Bench {
        opts: opts.clone(),
        db_url: db_url.to_owned(),
        pool,
        runs: Vec::new(),
        samples: BTreeMap::new(),
        notes: Vec::new(),
        best_rate: 0.0,
    };

    // Seam answering at once (every code is set), Seam answering 503, Seam refusing.
    let seam = StandIn::start().await?;
    seam.answer_unknown_codes(|id| {
        json!({
            "access_code_id": id, "device_id": "device_bench", "workspace_id": "ws_bench",
            "name": "Bench guest", "code": "1234", "type": "ongoing", "status": "set", "warnings": [], "errors": []
        })
    });
    let seam_503 = StandIn::start().await?;
    seam_503.set_mode(Mode::Status(503));
    let refused_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://127.0.0.1:{}", listener.local_addr()?.port())
    };

    // The intake-only service and the Node receiver run for the whole suite.
    let (intake, _) = start_service(db_url, &seam.url(), "server").await?;
    let intake_pid = intake.pid().expect("the service runs");
    let intake_addr = addr_of(&intake);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = test_kit::process::memory(intake_pid).unwrap_or_default().resident;
    if let Some(rate) = opts.latency_at {
        eprintln!("warm-up");
        closed_loop(intake_addr, deliveries(intake_addr, WEBHOOK_PATH, 1000, CODES), 8, None).await;
        ack_latency(&mut bench, intake_addr, rate).await?;
        let rows = latency_rows(&bench, &format!("{rate:.0}/s"), false);
        return Ok((bench, rows, machine_lines));
    }
    let node = match start_node(db_url).await {
        Ok(node) => Some(node),
        Err(e) => {
            bench.notes.push(format!("the Node receiver was not measured: {e:#}"));
            None
        }
    };

    // Warm-up: connections, pools, caches, the JIT.
    eprintln!("warm-up");
    closed_loop(intake_addr, deliveries(intake_addr, WEBHOOK_PATH, 1000, CODES), 8, None).await;
    if let Some(node) = &node {
        closed_loop(node.addr, deliveries(node.addr, WEBHOOK_PATH, 2000, CODES), 8, None).await;
    }
    pgbench(db_url, &minimal_script(CODES), 8, 1)?;

    let minimal = minimal_script(CODES);
    let minimal_one = minimal_one_statement_script(CODES);
    let own = own_sql_script(CODES);
    let url_503 = seam_503.url();
    let mut intake32 = None;
    for rep in 1..=opts.reps {
        for c in [8, 32] {
            eprintln!("repetition {rep}/{}, concurrency {c}", opts.reps);
            let (svc, svc_run) =
                bench.load_run(&format!("service intake c{c} #{rep}"), intake_addr, intake_pid, c, false).await?;
            let (min_tps, min_run) = bench.pgbench_run(&format!("pgbench minimal c{c} #{rep}"), &minimal, c).await?;
            let node_measured = match &node {
                Some(node) => {
                    Some(bench.load_run(&format!("Node c{c} #{rep}"), node.addr, node.pid(), c, false).await?)
                }
                None => None,
            };
            let (own_tps, own_run) = bench.pgbench_run(&format!("pgbench own SQL c{c} #{rep}"), &own, c).await?;
            let (one_tps, one_run) =
                bench.pgbench_run(&format!("pgbench minimal, one statement c{c} #{rep}"), &minimal_one, c).await?;

            let rate = svc.load.rate();
            bench.sample(&format!("svc{c}.rate"), rate, &[&svc_run]);
            bench.sample(&format!("svc{c}.p50"), svc.load.latency_ms(0.5), &[&svc_run]);
            bench.sample(&format!("svc{c}.p99"), svc.load.latency_ms(0.99), &[&svc_run]);
            bench.sample(&format!("svc{c}.cpu"), svc.cpu_per_delivery, &[&svc_run]);
            bench.sample(&format!("svc{c}.gen"), svc.generator_per_delivery, &[&svc_run]);
            bench.sample(&format!("min{c}"), min_tps, &[&min_run]);
            bench.sample(&format!("own{c}"), own_tps, &[&own_run]);
            bench.sample(&format!("ratio.min{c}"), rate / min_tps, &[&svc_run, &min_run]);
            bench.sample(&format!("ratio.own{c}"), rate / own_tps, &[&svc_run, &own_run]);
            bench.sample(&format!("one{c}"), one_tps, &[&one_run]);
            bench.sample(&format!("ratio.one{c}"), rate / one_tps, &[&svc_run, &one_run]);
            if let Some((n, n_run)) = node_measured {
                bench.sample(&format!("node{c}.rate"), n.load.rate(), &[&n_run]);
                bench.sample(&format!("node{c}.p99"), n.load.latency_ms(0.99), &[&n_run]);
                bench.sample(&format!("node{c}.cpu"), n.cpu_per_delivery, &[&n_run]);
                bench.sample(&format!("node{c}.gen"), n.generator_per_delivery, &[&n_run]);
                bench.sample(&format!("ratio.node{c}"), rate / n.load.rate(), &[&svc_run, &n_run]);
                bench.sample(
                    &format!("ratio.nodecpu{c}"),
                    n.cpu_per_delivery / svc.cpu_per_delivery,
                    &[&svc_run, &n_run],
                );
            }
            if c == 32 {
                intake32 = Some((rate, svc_run));
            }
        }
        let (intake32, intake32_run) = intake32.take().expect("measured above");

        // End to end: run_mode = all, Seam answering at once; the CPU until the queue is drained.
        eprintln!("repetition {rep}/{}, end to end and outages, concurrency 32", opts.reps);
        bench.reset().await?;
        let (e2e, _) = start_service(db_url, &seam.url(), "all").await?;
        seam.reset_counts();
        let (m, e2e_run) =
            bench.load_run(&format!("end to end c32 #{rep}"), addr_of(&e2e), e2e.pid().unwrap(), 32, true).await?;
        let whole = m.whole.as_secs_f64();
        bench.sample("e2e.rate", m.load.rate(), &[&e2e_run]);
        bench.sample("e2e.through", m.load.accepted as f64 / whole, &[&e2e_run]);
        bench.sample("e2e.cpu", m.cpu_per_delivery, &[&e2e_run]);
        bench.sample("e2e.calls", seam.calls() as f64, &[&e2e_run]);
        bench.sample("e2e.accepted", m.load.accepted as f64, &[&e2e_run]);
        drop(e2e);

        // Seam refusing connections; Seam answering 503 to everything.
        for (key, url, stand_in) in
            [("refused", refused_url.as_str(), None), ("503", url_503.as_str(), Some(&seam_503))]
        {
            bench.reset().await?;
            let (down, _) = start_service(db_url, url, "all").await?;
            if let Some(s) = stand_in {
                s.reset_counts();
            }
            let (m, run) = bench
                .load_run(&format!("Seam {key}, c32 #{rep}"), addr_of(&down), down.pid().unwrap(), 32, false)
                .await?;
            drop(down);
            bench.sample(&format!("{key}.rate"), m.load.rate(), &[&run]);
            bench.sample(&format!("{key}.cpu"), m.cpu_per_delivery, &[&run]);
            bench.sample(&format!("ratio.{key}"), m.load.rate() / intake32, &[&run, &intake32_run]);
            if let Some(s) = stand_in {
                bench.sample(&format!("{key}.calls"), s.calls() as f64, &[&run]);
            }
        }
    }
    bench.reset().await?;

    // Ack latency at half the highest intake rate, open loop, on the intake-only service.
    let max_rate = [
        median(&bench.values("svc8.rate").iter().map(|s| s.value).collect::<Vec<_>>()),
        median(&bench.values("svc32.rate").iter().map(|s| s.value).collect::<Vec<_>>()),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let half = (max_rate / 2.0).max(50.0);
    ack_latency(&mut bench, intake_addr, half).await?;
    let intake_peak = test_kit::process::memory(intake_pid).unwrap_or_default().peak;
    drop(intake);

    // run_mode = all with Seam answering at once: lag, Seam calls.
    let (service, _) = start_service(db_url, &seam.url(), "all").await?;
    let addr = addr_of(&service);
    let lag_n = if opts.quick { 1000 } else { 3000 };
    for rep in 1..=opts.reps {
        bench.reset().await?;
        let requests: Vec<_> = (0..lag_n).map(|i| delivery(addr, WEBHOOK_PATH, &format!("lag_{rep}_{i}"))).collect();
        let before = bench.before().await;
        let sent = load::open_loop(addr, requests, 500.0, OPEN_LOOP_CONNECTIONS).await;
        bench.open_loop_notes(&format!("lag run #{rep}"), &sent, lag_n);
        bench.wait_drained().await?;
        let run = bench.after(&format!("webhook → mirror lag at 500/s #{rep}"), before);
        let mut lags: Vec<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM a.updated_at - e.received_at)::float8 * 1000
             FROM access_codes a JOIN seam_events e ON e.access_code_id = a.access_code_id",
        )
        .fetch_all(&bench.pool)
        .await?;
        lags.sort_by(f64::total_cmp);
        let q =
            |q: f64| if lags.is_empty() { f64::NAN } else { lags[((lags.len() as f64 - 1.0) * q).round() as usize] };
        bench.sample("lag.p50", q(0.5), &[&run]);
        bench.sample("lag.p99", q(0.99), &[&run]);
        bench.sample("lag.n", lags.len() as f64, &[&run]);
    }
    for rep in 1..=opts.reps {
        bench.reset().await?;
        seam.reset_counts();
        let burst: Vec<_> = (0..100).map(|_| delivery(addr, WEBHOOK_PATH, &format!("burst_{rep}"))).collect();
        closed_loop(addr, burst, 100, None).await;
        bench.wait_drained().await?;
        let calls = seam.calls();
        bench.samples.entry("burst".into()).or_default().push(Sample { value: calls as f64, busy: None });

        seam.reset_counts();
        let spread: Vec<_> = (0..1000).map(|i| delivery(addr, WEBHOOK_PATH, &format!("spread_{rep}_{i}"))).collect();
        closed_loop(addr, spread, 32, None).await;
        bench.wait_drained().await?;
        bench.samples.entry("spread".into()).or_default().push(Sample { value: seam.calls() as f64, busy: None });
        eprintln!("  Seam calls #{rep}: burst of 100 on one code {calls}, 1,000 on 1,000 codes {}", seam.calls());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all_memory = test_kit::process::memory(service.pid().unwrap()).unwrap_or_default();
    drop(service);

    // Start → ready, migrations applied: 5 starts.
    let mut starts = Vec::new();
    for _ in 0..5 {
        let (service, took) = start_service(db_url, &seam.url(), "all").await?;
        starts.push(took.as_secs_f64() * 1e3);
        drop(service);
    }
    drop(node);

    let rows = rows(&bench, idle_rss, intake_peak, all_memory, &starts);
    Ok((bench, rows, machine_lines))
}

/// Ack latency, open loop at `rate` deliveries a second, on the intake-only service
/// at `addr`: samples `half.p50`, `half.p99`, `half.p999`, and the generator's own
/// CPU per delivery, `half.gen`.
async fn ack_latency(bench: &mut Bench, addr: SocketAddr, rate: f64) -> anyhow::Result<()> {
    for rep in 1..=bench.opts.reps {
        bench.reset().await?;
        let n = (rate * bench.opts.secs as f64) as usize;
        let requests = deliveries(addr, WEBHOOK_PATH, n, CODES);
        let before = bench.before().await;
        let generator = machine::cpu_us(std::process::id());
        let acks = load::open_loop(addr, requests, rate, OPEN_LOOP_CONNECTIONS).await;
        let generator = (machine::cpu_us(std::process::id()) - generator) / acks.load.accepted.max(1) as f64;
        let run = bench.after(&format!("ack latency at {rate:.0}/s #{rep}"), before);
        eprintln!("    generator {generator:.0} µs CPU/delivery");
        bench.sample("half.gen", generator, &[&run]);
        bench.sample("half.p50", acks.load.latency_ms(0.5), &[&run]);
        bench.sample("half.p99", acks.load.latency_ms(0.99), &[&run]);
        bench.sample("half.p999", acks.load.latency_ms(0.999), &[&run]);
        bench.open_loop_notes(&format!("ack latency run #{rep}"), &acks, n);
    }
    Ok(())
}

/// The ack latency rows, at `rate`; with the targets (set at half the highest
/// intake rate) when `targeted`.
fn latency_rows(bench: &Bench, rate: &str, targeted: bool) -> Vec<Row> {
    let v = |key: &str| bench.values(key);
    let (p50, p99): (Check, Check) = if targeted { (Some(|v| v <= 2.0), Some(|v| v <= 10.0)) } else { (None, None) };
    let target = |text: &'static str| if targeted { text } else { "" };
    vec![
        row(format!("ack latency p50 at {rate} (open loop)"), &v("half.p50"), ms, target("≤ 2 ms"), p50),
        row(format!("ack latency p99 at {rate} (open loop)"), &v("half.p99"), ms, target("≤ 10 ms"), p99),
        row(format!("ack latency p99.9 at {rate} (open loop)"), &v("half.p999"), ms, "", None),
        row(
            format!("load generator CPU per delivery (bench process), open loop at {rate}"),
            &v("half.gen"),
            us,
            "",
            None,
        ),
    ]
}

fn rows(
    bench: &Bench,
    idle_rss: u64,
    intake_peak: u64,
    all_memory: test_kit::process::Memory,
    starts: &[f64],
) -> Vec<Row> {
    let v = |key: &str| bench.values(key);
    let med = |key: &str| median(&v(key).iter().map(|s| s.value).collect::<Vec<_>>());
    let mut rows = Vec::new();
    for c in [8, 32] {
        rows.push(row(
            format!("intake only (run_mode = server), concurrency {c}: throughput"),
            &v(&format!("svc{c}.rate")),
            rate,
            "",
            None,
        ));
        // The pgbench baselines, the target's first: each as tps, then the intake's
        // ratio to it.
        let baselines: [(&str, &str, &str, &str, &str, Check); 3] = [
            ("min", "pgbench minimal transaction", "pgbench minimal", "", "≥ 1.0×", Some(|r| r >= 1.0)),
            (
                "one",
                "pgbench minimal work as one statement",
                "pgbench minimal as one statement",
                " (third line)",
                "—",
                None,
            ),
            (
                "own",
                "pgbench the service's own statement (one delivery per batch)",
                "pgbench own statement",
                " (second line)",
                "—",
                None,
            ),
        ];
        for (key, what, ratio_what, line, target, ok) in baselines {
            rows.push(row(format!("{what}, concurrency {c}{line}"), &v(&format!("{key}{c}")), tps, "", None));
            rows.push(ratio_row(
                format!("intake ÷ {ratio_what}, concurrency {c}{line}"),
                &v(&format!("ratio.{key}{c}")),
                format!("{:.0}/s vs {:.0} tps", med(&format!("svc{c}.rate")), med(&format!("{key}{c}"))),
                target,
                ok,
            ));
        }
        rows.push(row(format!("intake ack latency p50, concurrency {c}"), &v(&format!("svc{c}.p50")), ms, "", None));
        let (target, ok): (&str, Check) = if c == 32 { ("≤ 10 ms", Some(|v| v <= 10.0)) } else { ("", None) };
        rows.push(row(format!("intake ack latency p99, concurrency {c}"), &v(&format!("svc{c}.p99")), ms, target, ok));
        rows.push(row(
            format!("service CPU per delivery, intake only, concurrency {c}"),
            &v(&format!("svc{c}.cpu")),
            us,
            "≤ 60 µs",
            Some(|v| v <= 60.0),
        ));
    }
    // Rising with concurrency: the c32/c8 ratio of each repetition.
    let rising: Vec<Sample> = v("svc8.rate")
        .iter()
        .zip(v("svc32.rate"))
        .map(|(a, b)| Sample {
            value: b.value / a.value,
            busy: [a.busy, b.busy].into_iter().flatten().reduce(f64::max),
        })
        .collect();
    rows.push(ratio_row(
        "intake throughput c32 ÷ c8 (rising with concurrency)",
        &rising,
        format!("{:.0}/s vs {:.0}/s", med("svc32.rate"), med("svc8.rate")),
        "> 1.0×",
        Some(|r| r > 1.0),
    ));
    for c in [8, 32] {
        rows.push(row(
            format!("Node receiver (express + @seamapi/webhook + pg), concurrency {c}: throughput"),
            &v(&format!("node{c}.rate")),
            rate,
            "",
            None,
        ));
        rows.push(row(
            format!("Node receiver ack latency p99, concurrency {c}"),
            &v(&format!("node{c}.p99")),
            ms,
            "",
            None,
        ));
        rows.push(row(
            format!("Node receiver CPU per delivery, concurrency {c}"),
            &v(&format!("node{c}.cpu")),
            us,
            "",
            None,
        ));
    }
    rows.push(ratio_row(
        "intake ÷ Node throughput, concurrency 32",
        &v("ratio.node32"),
        format!("{:.0}/s vs {:.0}/s", med("svc32.rate"), med("node32.rate")),
        "≥ 3×",
        Some(|r| r >= 3.0),
    ));
    rows.push(ratio_row(
        "Node CPU ÷ service CPU per delivery, concurrency 32",
        &v("ratio.nodecpu32"),
        format!("{:.0} µs vs {:.0} µs", med("node32.cpu"), med("svc32.cpu")),
        "≥ 10×",
        Some(|r| r >= 10.0),
    ));
    rows.push(ratio_row(
        "intake ÷ Node throughput, concurrency 8",
        &v("ratio.node8"),
        format!("{:.0}/s vs {:.0}/s", med("svc8.rate"), med("node8.rate")),
        "—",
        None,
    ));
    rows.push(row(
        "end to end (run_mode = all, Seam answering at once), c32: intake throughput",
        &v("e2e.rate"),
        rate,
        "",
        None,
    ));
    rows.push(row("end to end, c32: deliveries ÷ (sending + draining the queue)", &v("e2e.through"), rate, "", None));
    rows.push(row(
        "end to end, c32: service CPU per delivery, drain included",
        &v("e2e.cpu"),
        us,
        "≤ 150 µs",
        Some(|v| v <= 150.0),
    ));
    rows.push(row("end to end, c32: Seam calls (deliveries on 1,000 codes)", &v("e2e.calls"), count, "", None));
    rows.push(row("end to end, c32: deliveries accepted", &v("e2e.accepted"), count, "", None));
    rows.push(row(
        "Seam refusing connections (run_mode = all), c32: intake throughput",
        &v("refused.rate"),
        rate,
        "",
        None,
    ));
    rows.push(ratio_row(
        "Seam refusing ÷ intake only, c32",
        &v("ratio.refused"),
        format!("{:.0}/s vs {:.0}/s", med("refused.rate"), med("svc32.rate")),
        "≥ 0.9×",
        Some(|r| r >= 0.9),
    ));
    rows.push(row("Seam refusing, c32: service CPU per delivery", &v("refused.cpu"), us, "", None));
    rows.push(row("Seam answering 503 (run_mode = all), c32: intake throughput", &v("503.rate"), rate, "", None));
    rows.push(ratio_row(
        "Seam answering 503 ÷ intake only, c32",
        &v("ratio.503"),
        format!("{:.0}/s vs {:.0}/s", med("503.rate"), med("svc32.rate")),
        "≥ 0.9×",
        Some(|r| r >= 0.9),
    ));
    rows.push(row("Seam answering 503, c32: service CPU per delivery", &v("503.cpu"), us, "", None));
    rows.push(row("Seam answering 503, c32: Seam calls during the run", &v("503.calls"), count, "", None));
    rows.extend(latency_rows(bench, "half the highest intake rate", true));
    rows.push(row(
        "webhook received → mirror row updated at 500/s: p50",
        &v("lag.p50"),
        ms,
        "≤ 10 ms",
        Some(|v| v <= 10.0),
    ));
    rows.push(row(
        "webhook received → mirror row updated at 500/s: p99",
        &v("lag.p99"),
        ms,
        "≤ 50 ms",
        Some(|v| v <= 50.0),
    ));
    // A count, not a time: every run must meet it, not only the median.
    let burst = v("burst");
    let worst = burst.iter().map(|s| s.value).fold(f64::NAN, f64::max);
    rows.push(Row {
        figure: "Seam calls, burst of 100 events on one code (verdict on the worst run)".into(),
        measured: three(&burst, count),
        target: "≤ 2".into(),
        verdict: if burst.is_empty() { "—".to_owned() } else { pass(worst <= 2.0) },
    });
    rows.push(row("Seam calls, 1,000 events on 1,000 codes", &v("spread"), count, "1,000", Some(|v| v == 1000.0)));
    let mib = |bytes: u64| bytes as f64 / 1024.0 / 1024.0;
    let peak = mib(intake_peak.max(all_memory.peak));
    rows.push(Row {
        figure: "RSS peak (intake-only service; run_mode = all service)".into(),
        measured: format!("{:.1} MiB ({:.1} MiB; {:.1} MiB)", peak, mib(intake_peak), mib(all_memory.peak)),
        target: "≤ 64 MiB".into(),
        verdict: pass(peak <= 64.0),
    });
    rows.push(Row {
        figure: "RSS idle (after start; run_mode = all after its load)".into(),
        measured: format!("{:.1} MiB; {:.1} MiB", mib(idle_rss), mib(all_memory.resident)),
        target: "≤ 25 MiB after start".into(),
        verdict: pass(mib(idle_rss) <= 25.0),
    });
    let mut sorted = starts.to_vec();
    sorted.sort_by(f64::total_cmp);
    rows.push(Row {
        figure: format!("process start → /readyz 200 (migrations applied), {} starts", starts.len()),
        measured: format!("median {:.0} ms, max {:.0} ms", median(starts), sorted.last().copied().unwrap_or(f64::NAN)),
        target: "≤ 500 ms".into(),
        verdict: pass(median(starts) <= 500.0),
    });
    rows.push(row(
        "load generator CPU per delivery (bench process), service intake c32",
        &v("svc32.gen"),
        us,
        "",
        None,
    ));
    rows.push(row("load generator CPU per delivery (bench process), Node c32", &v("node32.gen"), us, "", None));
    rows
}

fn print_report(bench: &Bench, rows: &[Row], machine_lines: &[String], start: [f64; 3], end: [f64; 3], took: Duration) {
    let o = &bench.opts;
    println!();
    println!(
        "## seam-access-sync benchmark ({}: {} s per load run, median of {} runs each)",
        if o.quick { "--quick" } else { "full" },
        o.secs,
        o.reps
    );
    println!();
    for line in machine_lines {
        println!("- {line}");
    }
    println!(
        "- load average (1/5/15 min): {:.2} {:.2} {:.2} at the start, {:.2} {:.2} {:.2} at the end; the suite took {:.0} s",
        start[0],
        start[1],
        start[2],
        end[0],
        end[1],
        end[2],
        took.as_secs_f64()
    );
    println!(
        "- \"machine busy\": a run that started with a load above {BUSY_LOAD} ({})",
        match o.rule {
            LoadRule::Gap =>
                "tasks runnable, averaged over the idle moment before the run; --load-rule 1min for the kernel's 1-minute average",
            LoadRule::OneMinute => "the kernel's 1-minute load average before the run",
        }
    );
    println!();
    println!("| figure | measured: median (the runs, in order) | target | verdict |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.figure,
            r.measured,
            if r.target.is_empty() { "—" } else { &r.target },
            r.verdict
        );
    }
    println!();
    println!("### Runs, in order, with the machine's load");
    println!();
    println!("| run | load 1/5/15 min before | 1 min after | idle moment before: runnable, cores busy | busy |");
    println!("|---|---|---|---|---|");
    for r in &bench.runs {
        println!(
            "| {} | {:.2} {:.2} {:.2} | {:.2} | {:.2}, {:.2} | {} |",
            r.label,
            r.load_before[0],
            r.load_before[1],
            r.load_before[2],
            r.load_after[0],
            r.quiet.runnable,
            r.quiet.busy_cores,
            r.busy.map_or_else(String::new, |l| format!("machine busy (load {l:.1})"))
        );
    }
    if !bench.notes.is_empty() {
        println!();
        for note in &bench.notes {
            println!("- {note}");
        }
    }
}
