//! The load generator: behaves like Svix. Each delivery (its own msg id, a realistic
//! `access_code.*` body) is sent again with the same msg id, a fresh timestamp and
//! signature, until it gets a 2xx; connection errors and non-2xx answers are retries.
//! Before a delivery is first sent, its code's truth is set in the Seam stand-in.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use test_kit::{SECRET, SeamHandle, svix_headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Event types of the managed endpoint (every one asks for a re-fetch).
pub const EVENT_TYPES: &[&str] = &[
    "access_code.created",
    "access_code.changed",
    "access_code.scheduled_on_device",
    "access_code.set_on_device",
    "access_code.failed_to_set_on_device",
    "access_code.delay_in_setting_on_device",
    "access_code.removed_from_device",
    "access_code.failed_to_remove_from_device",
    "access_code.delay_in_removing_from_device",
];

const STATUSES: &[&str] = &["set", "setting", "unset"];

pub const WORKSPACE_ID: &str = "0f4a4a4e-2a0b-4d8e-9d6c-2a6f1b9c3d10";

/// A stable device per code (a few codes share each device).
pub fn device_for(code: &str) -> String {
    let n = code.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 16;
    format!("6f0e3c2a-1b7d-4e59-8a3f-9c2d1e0b4a{n:02x}")
}

/// What Seam holds for a code right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub status: &'static str,
    pub warnings: Vec<Value>,
}

impl Truth {
    /// The code `id` as the Seam stand-in answers it while this is the truth.
    pub fn access_code(&self, id: &str) -> Value {
        json!({
            "access_code_id": id,
            "device_id": device_for(id),
            "workspace_id": WORKSPACE_ID,
            "name": "Guest stay",
            "type": "ongoing",
            "code": "8172",
            "is_managed": true,
            "status": self.status,
            "warnings": self.warnings,
            "errors": [],
            "created_at": "2026-11-20T10:00:00.000Z"
        })
    }
}

fn warning(code: &str, message: &str) -> Value {
    json!({"warning_code": code, "message": message, "created_at": "2026-11-25T09:00:00.000Z"})
}

/// A random truth: a status and 0–2 warnings.
pub fn random_truth(rng: &mut impl Rng) -> Truth {
    let mut warnings = vec![
        warning("delay_in_setting_on_device", "Code programming is delayed."),
        warning("code_modified_external_to_seam", "The code was modified outside Seam."),
        warning("third_party_integration_detected", "A third-party integration manages this lock."),
    ];
    warnings.shuffle(rng);
    warnings.truncate(rng.random_range(0..=2));
    Truth { status: STATUSES[rng.random_range(0..STATUSES.len())], warnings }
}

/// A fresh access code id.
pub fn new_code() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One Svix message: its id and body never change between attempts.
#[derive(Debug)]
pub struct Delivery {
    pub msg_id: String,
    pub event_id: String,
    pub code: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub body: String,
}

impl Delivery {
    pub fn new(code: &str, event_type: &str, occurred_at: DateTime<Utc>) -> Arc<Delivery> {
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "event_id": event_id,
            "event_type": event_type,
            "workspace_id": WORKSPACE_ID,
            "device_id": device_for(code),
            "connected_account_id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
            "access_code_id": code,
            "code": "8172",
            "occurred_at": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "created_at": (occurred_at + chrono::Duration::milliseconds(40)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event_description": format!("Seam reported {event_type} for this access code."),
            "device_custom_metadata": {"unit": "4B", "property": "Harbour View"},
            "connected_account_custom_metadata": {}
        })
        .to_string();
        Arc::new(Delivery {
            msg_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            event_id,
            code: code.to_owned(),
            event_type: event_type.to_owned(),
            occurred_at,
            body,
        })
    }

    /// A random event type, occurred now.
    pub fn random(code: &str, rng: &mut impl Rng) -> Arc<Delivery> {
        Delivery::new(code, EVENT_TYPES[rng.random_range(0..EVENT_TYPES.len())], Utc::now())
    }

    /// Svix's headers for an attempt now.
    fn signed(&self) -> [(&'static str, String); 3] {
        svix_headers(SECRET, &self.msg_id, Utc::now().timestamp(), self.body.as_bytes())
    }
}

/// One send of a delivery (several sends may carry the same delivery: duplicates).
pub struct Send {
    pub delivery: Arc<Delivery>,
    /// Set in the stand-in just before the first attempt.
    pub truth: Option<Truth>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// An HTTP answer and its body's `status` (2xx) or `error` (otherwise).
    Answered { status: u16, label: String },
    /// No answer: connection refused or reset, timeout.
    Failed(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered { status, label } => format!("{status} {label}"),
            Outcome::Failed(error) => error.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub took: Duration,
    pub target: usize,
    pub outcome: Outcome,
}

impl Attempt {
    pub fn is_2xx(&self) -> bool {
        matches!(self.outcome, Outcome::Answered { status, .. } if (200..300).contains(&status))
    }
    pub fn ended(&self) -> Instant {
        self.at + self.took
    }
}

/// What became of one send.
pub struct Record {
    pub delivery: Arc<Delivery>,
    pub attempts: Vec<Attempt>,
    /// The answer's `status` (`accepted`, `duplicate`) once a 2xx came; None if the
    /// sender gave up.
    pub acked: Option<String>,
}

pub struct LoadSpec {
    /// Each group is sent in order by one sender; groups run concurrently.
    pub groups: Vec<Vec<Send>>,
    pub targets: Vec<String>,
    pub senders: usize,
    /// First attempts per second, over all senders (None: as fast as they go).
    pub rate: Option<f64>,
    /// A send still without a 2xx this long after its first attempt is given up.
    pub give_up_after: Duration,
}

/// A load running in the background.
pub struct Load {
    acked: Arc<AtomicUsize>,
    pub total: usize,
    task: JoinHandle<Vec<Record>>,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(64)
        .build()
        .expect("an HTTP client")
}

impl Load {
    pub fn start(spec: LoadSpec, seam: SeamHandle) -> Load {
        let total = spec.groups.iter().map(Vec::len).sum();
        let acked = Arc::new(AtomicUsize::new(0));
        let groups = Arc::new(Mutex::new(spec.groups.into_iter().collect::<VecDeque<_>>()));
        let targets = Arc::new(spec.targets);
        let records = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let (first_attempts, round_robin) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let http = http_client();
        let began = Instant::now();
        let (rate, give_up_after) = (spec.rate, spec.give_up_after);
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..spec.senders.max(1) {
            let (groups, targets, records, acked, seam, http) =
                (groups.clone(), targets.clone(), records.clone(), acked.clone(), seam.clone(), http.clone());
            let (first_attempts, round_robin) = (first_attempts.clone(), round_robin.clone());
            senders.spawn(async move {
                loop {
                    let group = groups.lock().unwrap().pop_front();
                    let Some(group) = group else { return };
                    for send in group {
                        if let Some(rate) = rate {
                            let index = first_attempts.fetch_add(1, Ordering::SeqCst);
                            let due = began + Duration::from_secs_f64(index as f64 / rate);
                            tokio::time::sleep_until(due.into()).await;
                        }
                        if let Some(truth) = send.truth {
                            seam.set_code(&send.delivery.code, truth.access_code(&send.delivery.code));
                        }
                        let record =
                            send_until_acked(&http, &targets, &round_robin, send.delivery, give_up_after).await;
                        if record.acked.is_some() {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        records.lock().unwrap().push(record);
                    }
                }
            });
        }
        let task = tokio::spawn(async move {
            while senders.join_next().await.is_some() {}
            std::mem::take(&mut *records.lock().unwrap())
        });
        Load { acked, total, task }
    }

    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` sends were acknowledged (a point "mid-load" to inject a fault).
    pub async fn wait_acked(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.acked() < n {
            if self.task.is_finished() {
                anyhow::bail!(
                    "the load ended with {} of {} sends acknowledged, waiting for {n}",
                    self.acked(),
                    self.total
                );
            }
            anyhow::ensure!(
                started.elapsed() < within,
                "only {} of {} sends acknowledged after {within:?}, waiting for {n}",
                self.acked(),
                self.total
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits for every send to be acknowledged or given up.
    pub async fn finish(self) -> anyhow::Result<Vec<Record>> {
        Ok(self.task.await?)
    }
}

async fn send_until_acked(
    http: &reqwest::Client,
    targets: &[String],
    round_robin: &AtomicUsize,
    delivery: Arc<Delivery>,
    give_up_after: Duration,
) -> Record {
    let first = Instant::now();
    let mut attempts = Vec::new();
    loop {
        let target = round_robin.fetch_add(1, Ordering::SeqCst) % targets.len();
        let attempt = attempt(http, &targets[target], target, &delivery).await;
        let acked = match &attempt.outcome {
            Outcome::Answered { status, label } if (200..300).contains(status) => Some(label.clone()),
            _ => None,
        };
        attempts.push(attempt);
        if acked.is_some() || first.elapsed() > give_up_after {
            return Record { delivery, attempts, acked };
        }
        let pause = rand::rng().random_range(50..=200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn attempt(http: &reqwest::Client, url: &str, target: usize, delivery: &Delivery) -> Attempt {
    let mut request = http.post(url).header("content-type", "application/json").body(delivery.body.clone());
    for (name, value) in delivery.signed() {
        request = request.header(name, value);
    }
    let at = Instant::now();
    let sent = request.send().await;
    let outcome = match sent {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            let label = body
                .get("status")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("unreadable")
                .to_owned();
            Outcome::Answered { status, label }
        }
        Err(e) => Outcome::Failed(describe(&e)),
    };
    Attempt { at, took: at.elapsed(), target, outcome }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_connect() {
        "connect".to_owned()
    } else if e.is_timeout() {
        "timeout".to_owned()
    } else {
        "transport".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A delivery whose body arrives slowly, on its own connection: in flight in the
/// service for as long as the test wants.
pub struct SlowDelivery {
    stream: TcpStream,
    pub delivery: Arc<Delivery>,
    rest: Vec<u8>,
    pub at: Instant,
}

impl SlowDelivery {
    /// Opens a connection, proves the service serves it (a `GET /healthz` on it is
    /// answered), then sends the delivery's headers and the first half of its body.
    pub async fn begin(port: u16, delivery: Arc<Delivery>) -> anyhow::Result<SlowDelivery> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await?;
        let (status, _) = read_answer(&mut stream).await?;
        anyhow::ensure!(status == 200, "/healthz answered {status}");
        let svix: String = delivery.signed().iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let body = delivery.body.as_bytes();
        let half = body.len() / 2;
        let head = format!(
            "POST /webhooks/seam HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n{svix}\r\n",
            body.len()
        );
        let at = Instant::now();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body[..half]).await?;
        stream.flush().await?;
        let rest = body[half..].to_vec();
        Ok(SlowDelivery { stream, delivery, rest, at })
    }

    /// Sends the rest of the body and reads the answer.
    pub async fn finish(mut self) -> Record {
        let outcome = async {
            self.stream.write_all(&self.rest).await?;
            self.stream.flush().await?;
            read_answer(&mut self.stream).await
        }
        .await;
        let outcome = match outcome {
            Ok((status, body)) => {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let label = body
                    .get("status")
                    .or_else(|| body.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("unreadable")
                    .to_owned();
                Outcome::Answered { status, label }
            }
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        let attempt = Attempt { at: self.at, took: self.at.elapsed(), target: 0, outcome };
        let acked = match &attempt.outcome {
            Outcome::Answered { status, label } if (200..300).contains(status) => Some(label.clone()),
            _ => None,
        };
        Record { delivery: self.delivery, attempts: vec![attempt], acked }
    }
}

/// Reads one HTTP/1.1 answer with a `content-length`: its status and body.
async fn read_answer(stream: &mut TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "the connection closed before an answer came");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: {head}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "the connection closed in the middle of an answer");
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buffer[head_end..head_end + length].to_vec()))
}
