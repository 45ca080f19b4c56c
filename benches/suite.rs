//! The benchmark suite: `cargo bench --bench suite` (add `-- --quick` for a short run).
//!
//! Runs the real release binary as a child process against a throwaway database on
//! the local Postgres, with a Seam stand-in (in this process) that answers at once,
//! and measures it against `pgbench` running exactly the SQL the service runs per
//! delivery, in the same run, on the same machine. Prints a table of every figure
//! with its target. Nothing here asserts a time: it reports.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use test_kit::{SECRET, Service, ServiceConfig, StandIn, eventually_within, svix_headers};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A realistic `access_code.set_on_device` body (~600 bytes).
fn event_body(access_code_id: &str) -> String {
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "access_code.set_on_device",
        "workspace_id": "0f4a4a4e-2a0b-4d8e-9d6c-2a6f1b9c3d10",
        "device_id": "6f0e3c2a-1b7d-4e59-8a3f-9c2d1e0b4a77",
        "connected_account_id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        "access_code_id": access_code_id,
        "created_at": chrono::Utc::now().to_rfc3339(),
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "event_description": "The access code was set on the device.",
        "code": "8172",
        "device_custom_metadata": {"unit": "4B", "property": "Harbour View"},
        "connected_account_custom_metadata": {}
    })
    .to_string()
}

/// A signed delivery, ready to send.
struct Delivery {
    headers: [(&'static str, String); 3],
    body: String,
}

fn delivery(access_code_id: &str) -> Delivery {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let body = event_body(access_code_id);
    let headers = svix_headers(SECRET, &id, chrono::Utc::now().timestamp(), body.as_bytes());
    Delivery { headers, body }
}

async fn send(http: &reqwest::Client, url: &str, d: &Delivery) -> Duration {
    let started = Instant::now();
    let mut request = http.post(url).header("content-type", "application/json").body(d.body.clone());
    for (name, value) in &d.headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("delivery sent");
    let status = response.status();
    let _ = response.bytes().await;
    assert!(status.is_success(), "delivery answered {status}");
    started.elapsed()
}

/// Closed loop: `concurrency` senders, each sending its share back to back.
async fn closed_loop(http: &reqwest::Client, url: &str, deliveries: Vec<Delivery>, concurrency: usize) -> f64 {
    let total = deliveries.len();
    let queue = Arc::new(Mutex::new(deliveries));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, queue) = (http.clone(), url.to_owned(), queue.clone());
        senders.spawn(async move {
            loop {
                let next = queue.lock().unwrap().pop();
                let Some(d) = next else { return };
                send(&http, &url, &d).await;
            }
        });
    }
    while senders.join_next().await.is_some() {}
    total as f64 / started.elapsed().as_secs_f64()
}

/// Open loop: one delivery every 1/rate s, whatever the answers; returns each latency.
async fn open_loop(http: &reqwest::Client, url: &str, deliveries: Vec<Delivery>, rate: f64) -> Vec<Duration> {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sends = tokio::task::JoinSet::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        let (http, url) = (http.clone(), url.to_owned());
        sends.spawn(async move { send(&http, &url, &d).await });
    }
    let mut latencies = Vec::new();
    while let Some(latency) = sends.join_next().await {
        latencies.push(latency.unwrap());
    }
    latencies
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Resident and peak memory of `pid` in KiB (0 once it is gone).
fn memory_kib(pid: u32) -> test_kit::process::Memory {
    let bytes = test_kit::process::memory(pid).unwrap_or_default();
    test_kit::process::Memory { resident: bytes.resident / 1024, peak: bytes.peak / 1024 }
}

async fn wait_until_quiet(pool: &PgPool) {
    eventually_within(Duration::from_secs(120), "the queue to drain", || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM access_code_refetches").fetch_one(pool).await.unwrap();
        if pending == 0 { Ok(()) } else { Err(format!("{pending} re-fetches pending")) }
    })
    .await;
}

/// A pgbench script running, per transaction, exactly the statements the service
/// runs for one delivery (`INSERT_EVENTS_SQL` and `ENQUEUE_SQL`, with one-element
/// arrays for their parameters), on `codes` distinct codes.
fn pgbench_script(codes: usize) -> String {
    let payload = event_body("ac_bench").replace('\'', "''");
    let bind = |sql: &str, params: &[String]| {
        params
            .iter()
            .enumerate()
            .rev()
            .fold(sql.to_owned(), |sql, (i, value)| sql.replace(&format!("${}", i + 1), value))
    };
    let events = bind(
        seam_access_sync::store::intake::INSERT_EVENTS_SQL,
        &[
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
    let enqueue = bind(
        seam_access_sync::store::queue::ENQUEUE_SQL,
        &[
            "ARRAY['ac_' || :code]".into(),
            "ARRAY['managed']".into(),
            "ARRAY['device_bench']".into(),
            "ARRAY['ws_bench']".into(),
            "ARRAY[1]".into(),
            "ARRAY[gen_random_uuid()::text]".into(),
            "ARRAY['access_code.set_on_device']".into(),
            "ARRAY[now()]".into(),
            format!("'{}'", seam_access_sync::store::queue::REFETCH_CHANNEL),
            "ARRAY['ca_bench']".into(),
        ],
    );
    format!("\\set code random(0, {})\nBEGIN;\n{};\n{};\nCOMMIT;\n", codes - 1, events.trim(), enqueue.trim())
}

fn pgbench(db_url: &str, concurrency: usize, seconds: u64, codes: usize) -> f64 {
    let script = std::env::temp_dir().join(format!("sas_pgbench_{}.sql", std::process::id()));
    std::fs::write(&script, pgbench_script(codes)).expect("pgbench script written");
    let script = script.to_str().expect("utf-8 path").to_owned();
    let output = Command::new("pgbench")
        .args(["-n", "-c", &concurrency.to_string(), "-j", "2", "-T", &seconds.to_string(), "-f", &script, db_url])
        .output()
        .expect("pgbench runs (Debian package postgresql-client / postgresql-contrib)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("pgbench printed no tps: {text}\n{}", String::from_utf8_lossy(&output.stderr)))
}

/// Starts the release binary; returns it once /readyz answers 200, and how long that took.
async fn start_service(db_url: &str, seam_url: &str) -> (Service, Duration) {
    let config = ServiceConfig::new(env!("CARGO_BIN_EXE_seam-access-sync"), db_url, seam_url).api_key("seam_bench_key");
    let started = Instant::now();
    let service = Service::start(config).await.expect("the service starts");
    (service, started.elapsed())
}

struct Row {
    figure: String,
    value: String,
    target: &'static str,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--print-pgbench-script") {
        print!("{}", pgbench_script(1000));
        return Ok(());
    }
    seam_access_sync::install_tls_provider();
    let db_url = format!("{SERVER}/sas_bench_{}", std::process::id());
    Postgres::create_database(&db_url).await?;
    let result = run(&db_url, quick).await;
    Postgres::drop_database(&db_url).await?;
    let rows = result?;
    println!();
    println!("| figure | measured | target |");
    println!("|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.figure, row.value, row.target);
    }
    Ok(())
}

async fn run(db_url: &str, quick: bool) -> anyhow::Result<Vec<Row>> {
    let pool = PgPool::connect(db_url).await?;
    seam_access_sync::store::migrate(&pool).await?;
    // Seam answers at once: every code is set.
    let seam = StandIn::start().await?;
    seam.answer_unknown_codes(|id| {
        json!({
            "access_code_id": id, "device_id": "device_bench", "workspace_id": "ws_bench",
            "name": "Bench guest", "code": "1234", "type": "ongoing", "status": "set", "warnings": [], "errors": []
        })
    });
    let seam_url = seam.url();

    let mut rows = Vec::new();
    let (service, ready_in) = start_service(db_url, &seam_url).await;
    let pid = service.pid().expect("the service runs");
    let webhook = service.webhook();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = memory_kib(pid).resident;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let codes = 1000;
    let per_run = if quick { 2000 } else { 10_000 };
    let pgbench_seconds = if quick { 5 } else { 15 };

    // Warm-up: connections, pools, caches.
    let warm: Vec<Delivery> = (0..500).map(|i| delivery(&format!("ac_{}", i % codes))).collect();
    closed_loop(&http, &webhook, warm, 8).await;
    wait_until_quiet(&pool).await;

    let mut max_rate: f64 = 0.0;
    for concurrency in [8, 32] {
        let deliveries: Vec<Delivery> = (0..per_run).map(|i| delivery(&format!("ac_{}", i % codes))).collect();
        let rate = closed_loop(&http, &webhook, deliveries, concurrency).await;
        wait_until_quiet(&pool).await;
        let baseline = pgbench(db_url, concurrency, pgbench_seconds, codes);
        max_rate = max_rate.max(rate);
        eprintln!("concurrency {concurrency}: service {rate:.0}/s, pgbench {baseline:.0} tps");
        rows.push(Row {
            figure: format!("intake throughput, concurrency {concurrency}"),
            value: format!("{rate:.0} deliveries/s = {:.2}× pgbench ({baseline:.0} tps)", rate / baseline),
            target: "≥ 1.0× pgbench",
        });
    }

    let half = max_rate / 2.0;
    let count = (half * if quick { 5.0 } else { 15.0 }) as usize;
    let deliveries: Vec<Delivery> = (0..count).map(|i| delivery(&format!("ac_{}", i % codes))).collect();
    let mut acks: Vec<f64> =
        open_loop(&http, &webhook, deliveries, half).await.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    acks.sort_by(f64::total_cmp);
    rows.push(Row {
        figure: format!("ack latency at {half:.0}/s (half of max), {} deliveries", acks.len()),
        value: format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            percentile(&acks, 0.5),
            percentile(&acks, 0.99),
            percentile(&acks, 0.999)
        ),
        target: "p50 ≤ 2 ms, p99 ≤ 10 ms",
    });
    wait_until_quiet(&pool).await;

    // Webhook received → mirror row written, at 500/s, distinct codes.
    sqlx::query("TRUNCATE access_codes, access_code_history, seam_events").execute(&pool).await?;
    let n = if quick { 1000 } else { 5000 };
    let deliveries: Vec<Delivery> = (0..n).map(|i| delivery(&format!("lag_{i}"))).collect();
    open_loop(&http, &webhook, deliveries, 500.0).await;
    wait_until_quiet(&pool).await;
    let mut lags: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM a.updated_at - e.received_at)::float8 * 1000
         FROM access_codes a JOIN seam_events e ON e.access_code_id = a.access_code_id",
    )
    .fetch_all(&pool)
    .await?;
    lags.sort_by(f64::total_cmp);
    rows.push(Row {
        figure: format!("webhook received → mirror row updated at 500/s, {} events", lags.len()),
        value: format!("p50 {:.2} ms, p99 {:.2} ms", percentile(&lags, 0.5), percentile(&lags, 0.99)),
        target: "p50 ≤ 10 ms, p99 ≤ 50 ms",
    });

    // Seam calls per burst.
    seam.reset_counts();
    let burst: Vec<Delivery> = (0..100).map(|_| delivery("burst_one_code")).collect();
    closed_loop(&http, &webhook, burst, 100).await;
    wait_until_quiet(&pool).await;
    rows.push(Row {
        figure: "Seam calls, burst of 100 events on one code".into(),
        value: seam.calls().to_string(),
        target: "≤ 3",
    });
    seam.reset_counts();
    let spread: Vec<Delivery> = (0..1000).map(|i| delivery(&format!("spread_{i}"))).collect();
    closed_loop(&http, &webhook, spread, 32).await;
    wait_until_quiet(&pool).await;
    rows.push(Row {
        figure: "Seam calls, 1,000 events on 1,000 codes".into(),
        value: seam.calls().to_string(),
        target: "1,000",
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = memory_kib(pid).peak;
    let idle_after = memory_kib(pid).resident;
    rows.push(Row {
        figure: "RSS: peak under load / idle (after start; after load)".into(),
        value: format!(
            "{:.1} MiB / {:.1} MiB; {:.1} MiB",
            peak as f64 / 1024.0,
            idle_rss as f64 / 1024.0,
            idle_after as f64 / 1024.0
        ),
        target: "≤ 64 MiB / ≤ 25 MiB",
    });
    drop(service);

    // Start to ready with migrations already applied: best of 5 starts.
    let mut starts = vec![ready_in];
    for _ in 0..4 {
        let (service, took) = start_service(db_url, &seam_url).await;
        starts.push(took);
        drop(service);
    }
    starts.sort();
    rows.push(Row {
        figure: "process start → /readyz 200 (migrations applied), 5 starts".into(),
        value: format!("median {:.0} ms, max {:.0} ms", starts[2].as_secs_f64() * 1e3, starts[4].as_secs_f64() * 1e3),
        target: "≤ 500 ms",
    });
    pool.close().await;
    Ok(rows)
}
