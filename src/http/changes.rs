//! The change stream: `GET /v1/changes` (bearer token) and the console's
//! `/console/changes` (session cookie) send one Server-Sent Event per history row,
//! `id:` the history id and `data:` the row's change notification JSON
//! (`ChangeNotice::payload`).
//!
//! One listener per process (`LISTEN access_code_changed`) wakes every open stream;
//! each stream then reads the rows after the last one it sent from the table
//! (`store::changes`), so order and exactly-once come from the table, not from
//! notifications, and a stream also reads every `POLL_INTERVAL` in case a
//! notification was lost (the listener reconnecting). A client that reconnects with
//! `Last-Event-ID` resumes after that row.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::store::changes::{self, Position};
use crate::store::mirror::CHANGE_CHANNEL;

/// A comment line this often keeps proxies and clients from closing an idle stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Read the table this often even without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// While a gap in the ids waits to be explained (`store::changes`), look again this soon.
const GAP_RECHECK: Duration = Duration::from_millis(50);
/// Rows read at a time.
const BATCH: i64 = 500;

/// The process's change feed: the shared listener's wake-ups and the bound on open
/// streams (`api.max_change_streams`).
#[derive(Clone)]
pub struct ChangeFeed {
    pool: PgPool,
    wake: Arc<watch::Sender<u64>>,
    streams: Arc<Semaphore>,
    open: Gauge,
    /// Cancelled at shutdown: every stream ends, so no client holds the process.
    closing: CancellationToken,
}

/// More streams are open than `api.max_change_streams` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams;

/// Where a new stream starts: after this history id, or after the newest row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    After(i64),
    Now,
}

impl ChangeFeed {
    /// `open` counts the streams open (a gauge of the app's metrics).
    pub fn new(pool: PgPool, max_streams: usize, open: Gauge) -> ChangeFeed {
        ChangeFeed {
            pool,
            wake: Arc::new(watch::channel(0).0),
            streams: Arc::new(Semaphore::new(max_streams)),
            open,
            closing: CancellationToken::new(),
        }
    }

    /// The shared listener, until `stop`: each notification wakes every stream. A
    /// lost connection is re-made (sqlx does it on the next `recv`), and every stream
    /// is woken then, since notifications sent meanwhile are gone.
    pub async fn listen(self, stop: CancellationToken) {
        let mut listener = None;
        loop {
            if listener.is_none() {
                listener = match PgListener::connect_with(&self.pool).await {
                    Ok(mut l) => match l.listen(CHANGE_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed: LISTEN failed; streams poll meanwhile");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: cannot connect; streams poll meanwhile");
                        None
                    }
                };
                self.wake.send_modify(|n| *n += 1);
            }
            let Some(active) = listener.as_mut() else {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                received = active.recv() => match received {
                    Ok(_) => self.wake.send_modify(|n| *n += 1),
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: listener lost; reconnecting");
                        listener = None;
                    }
                },
            }
        }
        self.closing.cancel();
    }

    /// Opens a stream, or refuses when `api.max_change_streams` are open.
    pub async fn open(&self, start: Start) -> Result<Result<Response, sqlx::Error>, TooManyStreams> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| TooManyStreams)?;
        let last_id = match start {
            Start::After(id) => id,
            Start::Now => match changes::latest_id(&self.pool).await {
                Ok(id) => id,
                Err(e) => return Ok(Err(e)),
            },
        };
        self.open.inc();
        let open = OpenStream { _permit: permit, gauge: self.open.clone() };
        let reader = Reader {
            pool: self.pool.clone(),
            wake: self.wake.subscribe(),
            closing: self.closing.clone(),
            position: Position::after(last_id),
            _open: open,
        };
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let batch = reader.next_batch().await?;
            Some((futures::stream::iter(batch), reader))
        })
        .flatten();
        let keep_alive = KeepAlive::new().interval(HEARTBEAT).text("heartbeat");
        let mut response = Sse::new(ChangeStream(Box::pin(stream))).keep_alive(keep_alive).into_response();
        // Proxies (nginx) must pass events on as they come.
        response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(Ok(response))
    }
}

/// The events of one stream.
pub struct ChangeStream(std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>);

impl Stream for ChangeStream {
    type Item = Result<Event, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// Holds a stream's place under the bound, and its count in the gauge, while it is open.
struct OpenStream {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

struct Reader {
    pool: PgPool,
    wake: watch::Receiver<u64>,
    closing: CancellationToken,
    position: Position,
    _open: OpenStream,
}

impl Reader {
    /// The next events to send, waiting until there are some; None at shutdown.
    async fn next_batch(&mut self) -> Option<Vec<Result<Event, Infallible>>> {
        loop {
            if self.closing.is_cancelled() {
                return None;
            }
            // Seen before reading: a notification arriving during the read wakes the wait below.
            self.wake.borrow_and_update();
            let pause = match changes::read_after(&self.pool, self.position.last_id, BATCH).await {
                Ok(read) => {
                    let (sent, blocked) = self.position.advance(&read);
                    if sent > 0 {
                        return Some(read.records[..sent].iter().map(|r| Ok(event(r))).collect());
                    }
                    if blocked { GAP_RECHECK } else { POLL_INTERVAL }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change stream: cannot read the history; trying again");
                    POLL_INTERVAL
                }
            };
            tokio::select! {
                _ = self.closing.cancelled() => return None,
                _ = self.wake.changed(), if pause == POLL_INTERVAL => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

fn event(record: &crate::store::mirror::ChangeRecord) -> Event {
    Event::default().id(record.id.to_string()).data(record.notice.payload().to_string())
}

/// Where a request asks its stream to start: the `Last-Event-ID` header (what an
/// `EventSource` sends when it reconnects) wins over the `last_event_id` query
/// parameter; neither: from now. `Err(parameter)` names a value that is not a
/// history id (a plain decimal integer, 0 or more).
pub fn requested_start(headers: &HeaderMap, query: Option<&str>) -> Result<Start, &'static str> {
    if let Some(value) = headers.get("last-event-id") {
        return value.to_str().ok().and_then(history_id).map(Start::After).ok_or("Last-Event-ID");
    }
    match query {
        Some(value) => history_id(value).map(Start::After).ok_or("last_event_id"),
        None => Ok(Start::Now),
    }
}

fn history_id(value: &str) -> Option<i64> {
    let plain =
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && (value == "0" || !value.starts_with('0'));
    plain.then(|| value.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_starts_after_the_id_asked_for_the_header_first() {
        let mut headers = HeaderMap::new();
        assert_eq!(requested_start(&headers, None), Ok(Start::Now));
        assert_eq!(requested_start(&headers, Some("0")), Ok(Start::After(0)));
        assert_eq!(requested_start(&headers, Some("42")), Ok(Start::After(42)));
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        assert_eq!(requested_start(&headers, Some("42")), Ok(Start::After(7)));
        for bad in ["", "-1", "+1", "01", "1.0", " 1", "9223372036854775808", "x"] {
            assert_eq!(requested_start(&HeaderMap::new(), Some(bad)), Err("last_event_id"), "{bad:?}");
            let mut headers = HeaderMap::new();
            headers.insert("last-event-id", HeaderValue::from_str(bad).unwrap());
            assert_eq!(requested_start(&headers, None), Err("Last-Event-ID"), "{bad:?}");
        }
    }
}
