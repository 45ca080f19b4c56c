//! The load generator the suite points at the service and at the Node receiver
//! alike: every delivery built, signed and serialised to its request bytes before
//! the clock starts; one HTTP/1.1 keep-alive connection per concurrent sender, a
//! request written in one `write`, the answer read by its Content-Length; closed
//! loop for a fixed time or a fixed count. (A minimal HTTP/1.1 client on purpose:
//! the generator shares the machine's cores with what it measures.)

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
                match open.exchange(&request).await {
                    Ok((status, keep_alive, body)) => {
                        let latency = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        if (200..300).contains(&status) {
                            result.accepted += 1;
                            result.latencies_us.push(latency);
                        } else {
                            result.failed += 1;
                            result.first_failure.get_or_insert_with(|| format!("{status}: {body}"));
                        }
                        if !keep_alive {
                            connection = None;
                        }
                    }
                    Err(e) => {
                        result.failed += 1;
                        result.first_failure.get_or_insert_with(|| format!("exchange: {e:#}"));
                        connection = None;
                    }
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
        let result = result.expect("a sender does not panic");
        total.accepted += result.accepted;
        total.failed += result.failed;
        total.ran_out |= result.ran_out;
        total.latencies_us.extend(result.latencies_us);
        if total.first_failure.is_none() {
            total.first_failure = result.first_failure;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}

/// Open loop: one delivery every 1/`rate` s on a fresh task, whatever the answers
/// (reqwest's pooled client, so late answers do not hold back the schedule);
/// returns each latency in ms, sorted.
pub async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    bodies: Vec<(Vec<(&'static str, String)>, Bytes)>,
    rate: f64,
) -> Vec<f64> {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sends = tokio::task::JoinSet::new();
    for (i, (headers, body)) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        let mut request = http.post(url).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        sends.spawn(async move {
            let sent = Instant::now();
            let ok = match request.send().await {
                Ok(answer) => {
                    let ok = answer.status().is_success();
                    ok && answer.bytes().await.is_ok()
                }
                Err(_) => false,
            };
            (sent.elapsed(), ok)
        });
    }
    let mut latencies = Vec::new();
    while let Some(answer) = sends.join_next().await {
        let (latency, ok) = answer.expect("a send does not panic");
        if ok {
            latencies.push(latency.as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// A signed delivery as headers and body, for [`open_loop`].
pub fn open_delivery(access_code_id: &str) -> (Vec<(&'static str, String)>, Bytes) {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let body = event_body(access_code_id);
    let headers = svix_headers(SECRET, &id, chrono::Utc::now().timestamp(), body.as_bytes());
    (headers.into_iter().collect(), Bytes::from(body))
}
