//! Webhook received → mirror row updated, end to end through the real service.
//!
//! `cargo bench --bench mirror_latency [-- EVENTS RATE]` (defaults: 1000 events at
//! 500/s). Starts the service in-process (endpoint + worker) on a throwaway
//! database, a local Seam stand-in that answers at once, sends signed deliveries
//! for distinct codes at a fixed rate, and reports the time from `seam_events.received_at`
//! to `access_codes.updated_at` (both the database's clock) per code.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use seam_access_sync::app::Application;
use seam_access_sync::clock::SystemClock;
use seam_access_sync::config::Settings;
use seam_access_sync::signature::sign;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WARMUP: usize = 50;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let events: usize = args.first().map_or(Ok(1000), |a| a.parse())?;
    let rate: u64 = args.get(1).map_or(Ok(500), |a| a.parse())?;
    seam_access_sync::install_tls_provider();

    let server = std::env::var("BENCH_DATABASE_SERVER").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let url = format!("{server}/seam_access_sync_bench_{}", std::process::id());
    Postgres::create_database(&url).await?;
    let result = run(&url, events, rate).await;
    Postgres::drop_database(&url).await?;
    result
}

async fn run(url: &str, events: usize, rate: u64) -> anyhow::Result<()> {
    let pool = PgPool::connect(url).await?;
    seam_access_sync::db::migrate(&pool).await?;

    let seam_calls = Arc::new(AtomicUsize::new(0));
    let seam = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let seam_url = format!("http://{}", seam.local_addr()?);
    let stand_in = Router::new().route("/access_codes/get", get(answer)).with_state(seam_calls.clone());
    tokio::spawn(async move { axum::serve(seam, stand_in).await });

    let settings = Settings::from_toml(&[&format!(
        r#"
        [server]
        listen_addr = "127.0.0.1:0"
        [webhook]
        secret = "{SECRET}"
        [seam]
        api_url = "{seam_url}"
        api_key = "seam_bench_key"
        [log]
        level = "warn"
        "#
    )])?;
    let app = Application::build_with(settings, pool.clone(), Arc::new(SystemClock)).await?;
    let address = format!("http://127.0.0.1:{}/webhooks/seam", app.port());
    let stop = CancellationToken::new();
    let service = tokio::spawn(app.run_until_stopped(stop.clone()));

    // Warm-up (not measured): the pool opens its connections, the worker its
    // listener, the HTTP clients their connections.
    let http = reqwest::Client::new();
    send_at_rate(&http, &address, "warmup", WARMUP, rate).await?;
    wait_until_mirrored(&pool, WARMUP).await?;
    sqlx::query("TRUNCATE access_codes, seam_events, access_code_history").execute(&pool).await?;
    seam_calls.store(0, Ordering::SeqCst);

    let sent_in = send_at_rate(&http, &address, "bench", events, rate).await?;
    wait_until_mirrored(&pool, events).await?;
    let latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM a.updated_at - e.received_at)::float8 * 1000
         FROM access_codes a JOIN seam_events e ON e.access_code_id = a.access_code_id ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    stop.cancel();
    service.await??;

    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!("mirror latency: webhook received -> access_codes row updated (Seam stand-in answers at once)");
    println!(
        "  events            {events} for {events} codes, sent at {rate}/s (took {:.2} s), after {WARMUP} warm-up events",
        sent_in.as_secs_f64()
    );
    println!("  seam calls        {}", seam_calls.load(Ordering::SeqCst));
    println!("  p50               {:.2} ms", pick(0.50));
    println!("  p99               {:.2} ms", pick(0.99));
    println!("  max               {:.2} ms", pick(1.0));
    Ok(())
}

/// Sends `events` signed deliveries for distinct codes, `rate` per second.
async fn send_at_rate(
    http: &reqwest::Client,
    address: &str,
    run: &'static str,
    events: usize,
    rate: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..events {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let (http, address) = (http.clone(), address.to_owned());
        sends.spawn(async move {
            let body = json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "event_type": "access_code.set_on_device",
                "workspace_id": "ws_bench",
                "device_id": "device_bench",
                "access_code_id": format!("ac_{run}_{i}"),
                "occurred_at": chrono::Utc::now().to_rfc3339(),
            })
            .to_string();
            let id = format!("msg_{run}_{i}");
            let ts = chrono::Utc::now().timestamp();
            let signature = sign(SECRET, &id, ts, body.as_bytes()).unwrap();
            let response = http
                .post(&address)
                .header("svix-id", &id)
                .header("svix-timestamp", ts.to_string())
                .header("svix-signature", signature)
                .body(body)
                .send()
                .await
                .expect("delivery");
            assert!(response.status().is_success(), "delivery answered {}", response.status());
        });
    }
    while sends.join_next().await.transpose()?.is_some() {}
    Ok(started.elapsed())
}

async fn wait_until_mirrored(pool: &PgPool, events: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mirrored: i64 = sqlx::query_scalar("SELECT count(*) FROM access_codes").fetch_one(pool).await?;
        if mirrored as usize >= events {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {mirrored} of {events} codes mirrored after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(serde::Deserialize)]
struct CodeQuery {
    access_code_id: String,
}

async fn answer(State(calls): State<Arc<AtomicUsize>>, Query(q): Query<CodeQuery>) -> axum::Json<serde_json::Value> {
    calls.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "access_code": {
            "access_code_id": q.access_code_id,
            "device_id": "device_bench",
            "workspace_id": "ws_bench",
            "name": "Bench guest",
            "code": "1234",
            "type": "ongoing",
            "status": "set",
            "warnings": [],
            "errors": []
        },
        "ok": true
    }))
}
