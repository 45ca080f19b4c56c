//! This suite's rig: the app in-process on port 0 (with a clock the test sets) and
//! its own database, a worker pointed at a Seam stand-in, and a switchable TCP proxy
//! to take the database away. The signer and secrets, log capture, `eventually` and
//! the Seam stand-in come from the test kit (`test-kit/`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use seam_access_sync::app::Application;
use seam_access_sync::clock::FixedClock;
use seam_access_sync::config::Settings;
use seam_access_sync::jobs::catch_up::CatchUp;
use seam_access_sync::jobs::import::{Import, Retry};
use seam_access_sync::jobs::worker::Worker;
use seam_access_sync::seam::SeamClient;
use seam_access_sync::seam::SeamKeyStatus;
use seam_access_sync::seam::workspaces::Workspaces;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wiremock::{Request, ResponseTemplate};

pub use test_kit::fixtures;
pub use test_kit::logs::captured as captured_logs;
pub use test_kit::{NEW_SECRET, SECRET, eventually, sign, svix_headers};

/// The moment the app's clock stands at.
pub const NOW: i64 = 1_795_000_000;
pub const API_KEY: &str = "seam_test_key_1";

pub struct TestApp {
    pub address: String,
    pub clock: FixedClock,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for tests: the endpoint only (workers are driven by the test), the
/// test's Seam stand-in, and `extra` TOML on top.
pub fn settings(seam_url: &str, extra: &str) -> Settings {
    settings_with(seam_url, &[extra])
}

/// As `settings`, with several TOML layers (later ones win).
pub fn settings_with(seam_url: &str, extra: &[&str]) -> Settings {
    let test = format!(
        r#"
        [server]
        listen_addr = "127.0.0.1:0"
        run_mode = "server"
        [webhook]
        secret = "{SECRET}"
        [seam]
        api_url = "{seam_url}"
        api_key = "{API_KEY}"
        [worker]
        backoff_base_ms = 1000
        backoff_max_ms = 60000
        # Tests drive the queue step by step: a code asked for again is due at once.
        requested_again_delay_ms = 0
        # Tests count attempts against failing stand-ins: the breaker has its own tests.
        [seam.breaker]
        failures = 1000000
        # Background jobs are driven by their own tests.
        [catch_up]
        interval_seconds = 0
        [sweep]
        interval_seconds = 0
        [import]
        on_start = false
        "#
    );
    let layers: Vec<&str> = std::iter::once(test.as_str()).chain(extra.iter().copied()).collect();
    Settings::from_toml(&layers).expect("test settings")
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, settings("http://127.0.0.1:9", "")).await
}

pub async fn spawn_app_with(pool: PgPool, settings: Settings) -> TestApp {
    test_kit::logs::capture("debug,sqlx=warn,hyper=warn,reqwest=warn");
    seam_access_sync::install_tls_provider();
    let clock = FixedClock::at(NOW);
    let app = Application::build_with(settings, pool.clone(), Arc::new(clock.clone())).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { address, clock, http: reqwest::Client::new(), shutdown, server: Some(server) }
}

impl TestApp {
    /// Signs `body` as Svix would at the app's current time and posts it.
    pub async fn deliver(&self, message_id: &str, body: &str) -> reqwest::Response {
        let headers = svix_headers(SECRET, message_id, self.clock_now(), body.as_bytes());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        self.post_webhook(&headers, body.as_bytes().to_vec()).await
    }

    pub async fn post_webhook(&self, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/webhooks/seam", self.address)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    pub fn clock_now(&self) -> i64 {
        use seam_access_sync::clock::Clock;
        self.clock.now_unix()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.address)).send().await.expect("request sent")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Rows in `table`.
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Rows in every table a delivery writes to.
pub async fn written(pool: &PgPool) -> (i64, i64, i64) {
    (count(pool, "seam_events").await, count(pool, "access_code_refetches").await, count(pool, "access_codes").await)
}

/// An `access_code.*` event as Seam sends it (the kit's documented event for the
/// type), with a fresh event id, and the PIN on every type (Seam puts it on three;
/// the document allows more fields) so that PIN handling is exercised everywhere.
pub fn access_code_event(event_type: &str, access_code_id: &str, occurred_at: &str) -> Value {
    fixtures::with(
        fixtures::access_code_event(event_type, access_code_id, occurred_at),
        json!({ "event_id": uuid::Uuid::new_v4().to_string(), "code": "4321" }),
    )
}

/// A worker pointed at `seam_url`, for tests to drive step by step.
pub fn worker(pool: &PgPool, seam_url: &str, extra: &str) -> (Worker, SeamKeyStatus) {
    let settings = settings(seam_url, extra);
    let status = SeamKeyStatus::default();
    let seam = SeamClient::new(&settings.seam).unwrap().paced(settings.worker.max_requests_per_second);
    let metrics = std::sync::Arc::new(seam_access_sync::telemetry::metrics::Metrics::new());
    let workspaces = Workspaces::single(seam, status.clone());
    (Worker::new(pool.clone(), workspaces, settings.worker.clone(), settings.store_pins, metrics), status)
}

/// The single-key setup pointed at `seam_url` (its workspace not known: the
/// stand-in answers 404 on `/workspaces/get` unless told), and its key status.
fn single_workspace(settings: &Settings) -> (Workspaces, SeamKeyStatus) {
    let status = SeamKeyStatus::default();
    let seam = SeamClient::new(&settings.seam).unwrap().paced(settings.worker.max_requests_per_second);
    (Workspaces::single(seam, status.clone()), status)
}

/// Catch-up of the single-key setup pointed at `seam_url`, for tests to run once at
/// a time (`run_workspace(0)`).
pub fn catch_up(pool: &PgPool, seam_url: &str, extra: &str) -> (CatchUp, SeamKeyStatus) {
    let settings = settings(seam_url, extra);
    let (workspaces, status) = single_workspace(&settings);
    (catch_up_of(pool, &settings, workspaces), status)
}

/// Catch-up of `workspaces`.
pub fn catch_up_of(pool: &PgPool, settings: &Settings, workspaces: Workspaces) -> CatchUp {
    let metrics = std::sync::Arc::new(seam_access_sync::telemetry::metrics::Metrics::new());
    CatchUp::new(pool.clone(), workspaces, settings.catch_up.clone(), settings.store_pins, metrics)
}

/// The import of the single-key setup pointed at `seam_url`, for tests to run once
/// at a time (`run_workspace(0)`): a list call that fails is not tried again (the
/// run fails at once), and its metrics.
pub fn import_job(
    pool: &PgPool,
    seam_url: &str,
    extra: &str,
) -> (Import, SeamKeyStatus, Arc<seam_access_sync::telemetry::metrics::Metrics>) {
    let settings = settings(seam_url, extra);
    let (workspaces, status) = single_workspace(&settings);
    let (import, metrics) = import_of(pool, &settings, workspaces);
    (import, status, metrics)
}

/// The import of `workspaces`, failing fast like `import_job`'s.
pub fn import_of(
    pool: &PgPool,
    settings: &Settings,
    workspaces: Workspaces,
) -> (Import, Arc<seam_access_sync::telemetry::metrics::Metrics>) {
    let metrics = Arc::new(seam_access_sync::telemetry::metrics::Metrics::new());
    let import = Import::new(pool.clone(), workspaces, settings.import.clone(), settings.store_pins, metrics.clone())
        .with_retry(Retry { attempts: 1, ..Retry::default() });
    (import, metrics)
}

/// Makes every pending re-fetch due now (stands in for waiting out a backoff).
pub async fn make_due(pool: &PgPool) {
    sqlx::query("UPDATE access_code_refetches SET next_attempt_at = now()").execute(pool).await.unwrap();
}

/// A TCP proxy in front of Postgres that the test can switch off: existing
/// connections are cut and new ones refused, as when the database goes down.
pub struct DatabaseProxy {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl DatabaseProxy {
    pub async fn start(upstream: SocketAddr) -> DatabaseProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cancelled = cut2.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cancelled.cancelled() => {}
                    }
                });
            }
        });
        DatabaseProxy { address, up, cut }
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// A pool to the test's database through this proxy.
    pub fn pool(&self, direct: &PgPool) -> PgPool {
        let options: PgConnectOptions = (*direct.connect_options()).clone().host("127.0.0.1").port(self.address.port());
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_millis(1500))
            .connect_lazy_with(options)
    }
}

/// Where the test Postgres listens.
pub fn postgres_address(pool: &PgPool) -> SocketAddr {
    let options = pool.connect_options();
    let host = options.get_host();
    let host = if host == "localhost" || host.starts_with('/') { "127.0.0.1" } else { host };
    format!("{host}:{}", options.get_port()).parse().expect("postgres address")
}

/// `/events/list` as the live API serves it, for a wiremock server: events of the
/// `event_types` asked for, created in the window, newest first, at most `limit`.
pub fn event_log(events: Vec<Value>) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    move |request: &Request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let time = |v: &Value| v.as_str().map(|t| t.parse::<DateTime<Utc>>().unwrap());
        let (from, to) = match (&body["since"], &body["between"]) {
            (since, Value::Null) => (time(since), None),
            (_, between) => (time(&between[0]), time(&between[1])),
        };
        let types: Vec<&str> = body["event_types"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let limit = body["limit"].as_u64().unwrap_or(500) as usize;
        let mut listed: Vec<Value> = events
            .iter()
            .filter(|e| types.is_empty() || e["event_type"].as_str().is_some_and(|t| types.contains(&t)))
            .filter(|e| {
                let created = time(&e["created_at"]).unwrap();
                from.is_none_or(|f| created > f) && to.is_none_or(|t| created < t)
            })
            .cloned()
            .collect();
        listed.sort_by_key(|e| std::cmp::Reverse(e["created_at"].as_str().unwrap().to_owned()));
        listed.truncate(limit);
        ResponseTemplate::new(200).set_body_json(json!({ "events": listed, "ok": true }))
    }
}
