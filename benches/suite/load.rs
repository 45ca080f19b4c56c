//! The load generator the suite points at the service and at the Node receiver
//! alike: every delivery built, signed and serialised to its request bytes before
//! the clock starts; one HTTP/1.1 keep-alive connection per concurrent sender, a
//! request written in one `write`, the answer read by its Content-Length; closed
//! loop for a fixed time or a fixed count, or open loop at a fixed rate. (A minimal
//! HTTP/1.1 client on purpose: the generator shares the machine's cores with what
//! it measures.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use test_kit::{SECRET, svix_headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One delivery's whole HTTP/1.1 request.
pub type Delivery = Bytes;

/// A realistic `access_code.set_on_device` body (~600 bytes).
pub fn event_body(access_code_id: &str) -> String {
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

/// One signed delivery of an event on `access_code_id` (a new event id and a new
/// delivery id each time): the request bytes for `path` on `addr`.
pub fn delivery(addr: SocketAddr, path: &str, access_code_id: &str) -> Delivery {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let body = event_body(access_code_id);
    let headers = svix_headers(SECRET, &id, chrono::Utc::now().timestamp(), body.as_bytes());
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    Bytes::from(request)
}

/// `n` deliveries on `codes` distinct codes (`ac_0` … ), round robin.
pub fn deliveries(addr: SocketAddr, path: &str, n: usize, codes: usize) -> Vec<Delivery> {
    (0..n).map(|i| delivery(addr, path, &format!("ac_{}", i % codes))).collect()
}

/// A keep-alive connection: sends one request, reads its whole answer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buffer: Vec::with_capacity(4096) })
    }

    /// The answer's status, whether the connection can carry another request, and
    /// (not for a 2xx) the start of the answer's body.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, bool, String)> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let head_end = loop {
            if let Some(i) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])?;
        let status: u16 =
            head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("no status: {head}"))?;
        let mut length = None;
        let mut keep_alive = true;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
                "transfer-encoding" => anyhow::bail!("a chunked answer (not supported by the generator)"),
                _ => {}
            }
        }
        let length = length.ok_or_else(|| anyhow::anyhow!("an answer without Content-Length: {head}"))?;
        while self.buffer.len() < head_end + length {
            self.read_more().await?;
        }
        let body = if (200..300).contains(&status) {
            String::new()
        } else {
            String::from_utf8_lossy(&self.buffer[head_end..head_end + length]).chars().take(200).collect()
        };
        Ok((status, keep_alive, body))
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed");
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// What one closed-loop run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Deliveries answered 2xx.
    pub accepted: u64,
    /// Deliveries answered otherwise, or whose connection failed.
    pub failed: u64,
    pub first_failure: Option<String>,
    /// From the start signal until the last sender finished.
    pub elapsed: Duration,
    /// Every accepted delivery's latency (send → whole answer read), in µs, sorted.
    pub latencies_us: Vec<u32>,
    /// A sender used up its pre-built deliveries before the time was up.
    pub ran_out: bool,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    /// Counts one exchange sent at `sent`; false when its connection cannot carry
    /// another request.
    fn record(&mut self, sent: Instant, outcome: anyhow::Result<(u16, bool, String)>) -> bool {
        match outcome {
            Ok((status, keep_alive, body)) => {
                if (200..300).contains(&status) {
                    self.accepted += 1;
                    self.latencies_us.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    self.failed += 1;
                    self.first_failure.get_or_insert_with(|| format!("{status}: {body}"));
                }
                keep_alive
            }
            Err(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert_with(|| format!("exchange: {e:#}"));
                false
            }
        }
    }

    /// Adds one sender's counts (the latencies unsorted).
    fn add(&mut self, sender: LoadResult) {
        self.accepted += sender.accepted;
        self.failed += sender.failed;
        self.ran_out |= sender.ran_out;
        self.latencies_us.extend(sender.latencies_us);
        if self.first_failure.is_none() {
            self.first_failure = sender.first_failure;
        }
    }

    /// The `q` quantile of the latencies, in ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1e3
    }
}

/// Closed loop: `concurrency` senders, each on its own connection, each sending
/// its share of `deliveries` back to back until they are gone or `duration` has
/// passed (then the requests in flight finish). Connections are opened before the
/// clock starts.
pub async fn closed_loop(
    addr: SocketAddr,
    deliveries: Vec<Delivery>,
    concurrency: usize,
    duration: Option<Duration>,
) -> LoadResult {
    let mut shares: Vec<Vec<Delivery>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, d) in deliveries.into_iter().enumerate() {
        shares[i % concurrency].push(d);
    }
    let start = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let mut senders = tokio::task::JoinSet::new();
    for mut share in shares {
        share.reverse();
        let start = start.clone();
        senders.spawn(async move {
            let mut result = LoadResult::default();
            let mut connection = Connection::open(addr).await.ok();
            start.wait().await;
            let deadline = duration.map(|d| Instant::now() + d);
            result.latencies_us.reserve(share.len());
            while let Some(request) = share.pop() {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return result;
                }
                if connection.is_none() {
                    match Connection::open(addr).await {
                        Ok(open) => connection = Some(open),
                        Err(e) => {
                            result.failed += 1;
                            result.first_failure.get_or_insert_with(|| format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let open = connection.as_mut().expect("connected above");
                let sent = Instant::now();
                if !result.record(sent, open.exchange(&request).await) {
                    connection = None;
                }
            }
            result.ran_out = deadline.is_some_and(|d| Instant::now() < d);
            result
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut total = LoadResult::default();
    while let Some(result) = senders.join_next().await {
        total.add(result.expect("a sender does not panic"));
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}

/// Open loop: delivery `i` is due at `i`/`rate` s after the start, whatever the
/// answers. `connections` keep-alive connections, opened before the clock starts,
/// each take the next delivery due, wait for its time and send it; a connection
/// still waiting for an answer leaves the next delivery to another, so with enough
/// of them a slow answer does not hold back the schedule. Each latency is measured
/// from the send; `late` counts the sends that left more than 2 ms after they were
/// due (every connection busy, or the generator starved of CPU).
pub async fn open_loop(addr: SocketAddr, deliveries: Vec<Delivery>, rate: f64, connections: usize) -> OpenLoopResult {
    let deliveries: Arc<[Delivery]> = deliveries.into();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut opened = Vec::with_capacity(connections);
    for _ in 0..connections {
        opened.push(Connection::open(addr).await.ok());
    }
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for mut connection in opened {
        let (deliveries, next) = (deliveries.clone(), next.clone());
        senders.spawn(async move {
            let mut result = OpenLoopResult::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(request) = deliveries.get(i) else { return result };
                let due = started + interval.mul_f64(i as f64);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                if connection.is_none() {
                    connection = Connection::open(addr).await.ok();
                }
                let Some(open) = connection.as_mut() else {
                    result.load.failed += 1;
                    result.load.first_failure.get_or_insert_with(|| "connect: failed".to_owned());
                    continue;
                };
                let sent = Instant::now();
                if sent.duration_since(due) > Duration::from_millis(2) {
                    result.late += 1;
                }
                if !result.load.record(sent, open.exchange(request).await) {
                    connection = None;
                }
            }
        });
    }
    let mut total = OpenLoopResult::default();
    while let Some(result) = senders.join_next().await {
        let result = result.expect("a sender does not panic");
        total.late += result.late;
        total.load.add(result.load);
    }
    total.load.elapsed = started.elapsed();
    total.load.latencies_us.sort_unstable();
    total
}

/// What one open-loop run saw.
#[derive(Debug, Default)]
pub struct OpenLoopResult {
    pub load: LoadResult,
    /// Sends that left more than 2 ms after they were due.
    pub late: u64,
}
