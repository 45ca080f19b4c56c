//! The change stream, `GET /v1/changes`: one Server-Sent Event per history row,
//! resumed with `Last-Event-ID` without a gap or a repeat, the notification's JSON,
//! bearer auth, the bound on open streams, the heartbeat.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use test_kit::StandIn;

use crate::helpers::*;
use crate::operations::seam_code;

pub const TOKEN: &str = "stream-token-0123456789abcdef0123456789";

pub async fn stream_app(pool: &PgPool, seam_url: &str, extra: &str) -> TestApp {
    let tokens = format!("[api]\ntokens = \"{TOKEN}\"");
    spawn_app_with(pool.clone(), settings_with(seam_url, &[&tokens, extra])).await
}

/// What a stream sends: an event, or a comment line (the heartbeat).
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Event { id: i64, data: Value },
    Comment(String),
}

/// A client of a Server-Sent Events answer, reading it as it comes.
pub struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventStream {
    pub fn of(response: reqwest::Response) -> EventStream {
        EventStream { body: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next thing sent, or None when nothing comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Sent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data, mut comment) = (None, Vec::new(), None);
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix(':') {
                        comment = Some(rest.trim().to_owned());
                    } else if let Some(rest) = line.strip_prefix("id:") {
                        id = Some(rest.trim().parse::<i64>().expect("a numeric id"));
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push(rest.trim_start().to_owned());
                    }
                }
                return Some(match (id, comment) {
                    (Some(id), _) => {
                        Sent::Event { id, data: serde_json::from_str(&data.join("\n")).expect("JSON data") }
                    }
                    (None, Some(text)) => Sent::Comment(text),
                    (None, None) => panic!("an event without id: {block:?}"),
                });
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                Ok(Some(Err(e))) => panic!("the stream failed: {e}"),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next `n` events (comments skipped), failing after 10 s without one.
    pub async fn events(&mut self, n: usize) -> Vec<(i64, Value)> {
        let mut events = Vec::new();
        while events.len() < n {
            match self.next(Duration::from_secs(10)).await {
                Some(Sent::Event { id, data }) => events.push((id, data)),
                Some(Sent::Comment(_)) => {}
                None => panic!("waited 10 s for event {} of {n}; got {events:?}", events.len() + 1),
            }
        }
        events
    }

    /// Events arriving within `within` (comments skipped).
    pub async fn more(&mut self, within: Duration) -> Vec<(i64, Value)> {
        let mut events = Vec::new();
        while let Some(sent) = self.next(within).await {
            if let Sent::Event { id, data } = sent {
                events.push((id, data));
            }
        }
        events
    }
}

pub async fn open(app: &TestApp, token: Option<&str>, last_event_id: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = app.http.get(format!("{}/v1/changes{query}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("request sent")
}

/// Makes Seam's stand-in say `status` (with `warnings` warnings) for `id`, delivers
/// an event for it and lets the worker fetch it: one history row when it changed.
pub async fn change(
    app: &TestApp,
    seam: &StandIn,
    worker: &seam_access_sync::jobs::worker::Worker,
    id: &str,
    status: &str,
    warnings: usize,
    n: usize,
) {
    let list: Vec<Value> =
        (0..warnings).map(|i| fixtures::warning("delay_in_setting_on_device", &format!("w{i}"))).collect();
    seam.set_code(id, seam_code(id, status, json!(list)));
    let event = access_code_event("access_code.changed", id, &format!("2026-11-25T10:{:02}:{:02}Z", n / 60, n % 60));
    assert_eq!(app.deliver(&format!("msg_{id}_{n}"), &event.to_string()).await.status(), StatusCode::OK);
    worker.drain().await.unwrap();
}

async fn history_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM access_code_history ORDER BY id").fetch_all(pool).await.unwrap()
}

#[sqlx::test]
async fn a_client_that_reconnects_with_last_event_id_gets_every_change_in_between_exactly_once(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    let app = stream_app(&pool, &seam.url(), "").await;
    let (worker, _) = worker(&pool, &seam.url(), "");
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("access_code_changed").await.unwrap();

    let response = open(&app, Some(TOKEN), None, "?last_event_id=0").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut first = EventStream::of(response);
    let mut n = 0;
    for (id, status) in [("ac_1", "setting"), ("ac_2", "setting"), ("ac_1", "set")] {
        n += 1;
        change(&app, &seam, &worker, id, status, 0, n).await;
    }
    let before = first.events(3).await;
    drop(first); // the client goes away

    // While it is away: seven more changes, two codes interleaved.
    for step in 0..7 {
        n += 1;
        let id = if step % 2 == 0 { "ac_2" } else { "ac_3" };
        change(&app, &seam, &worker, id, if step % 3 == 0 { "set" } else { "setting" }, step % 3, n).await;
    }
    let last_seen = before.last().unwrap().0.to_string();
    let mut second = EventStream::of(open(&app, Some(TOKEN), Some(&last_seen), "").await);
    let missed = history_ids(&pool).await.len() - before.len();
    let after = second.events(missed).await;
    // And then one live change, and nothing else.
    n += 1;
    change(&app, &seam, &worker, "ac_1", "setting", 1, n).await;
    let live = second.events(1).await;
    assert_eq!(second.more(Duration::from_millis(700)).await, vec![], "nothing twice");

    let received: Vec<(i64, Value)> = before.into_iter().chain(after).chain(live).collect();
    let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, history_ids(&pool).await, "every history row, in order, once");
    // Each event's data is the notification sent for that row.
    let mut notified = Vec::new();
    while let Ok(Ok(Some(n))) = tokio::time::timeout(Duration::from_millis(300), listener.try_recv()).await {
        notified.push(serde_json::from_str::<Value>(n.payload()).unwrap());
    }
    let data: Vec<Value> = received.into_iter().map(|(_, data)| data).collect();
    assert_eq!(data, notified);
    assert_eq!(data[0]["access_code_id"], "ac_1");
    assert_eq!(data[0]["change"], "created");
}

#[sqlx::test]
async fn a_stream_opened_without_last_event_id_starts_with_the_next_change(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    let app = stream_app(&pool, &seam.url(), "").await;
    let (worker, _) = worker(&pool, &seam.url(), "");
    change(&app, &seam, &worker, "ac_old", "set", 0, 1).await;
    let mut stream = EventStream::of(open(&app, Some(TOKEN), None, "").await);
    change(&app, &seam, &worker, "ac_new", "setting", 0, 2).await;
    let events = stream.events(1).await;
    assert_eq!(events[0].1["access_code_id"], "ac_new");
    assert_eq!(stream.more(Duration::from_millis(500)).await, vec![]);
}

#[sqlx::test]
async fn the_stream_needs_a_token_and_a_history_id(pool: PgPool) {
    let app = stream_app(&pool, "http://127.0.0.1:9", "").await;
    for token in [None, Some("wrong-token-0123456789abcdef0123456789")] {
        let response = open(&app, token, None, "").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "unauthorized");
    }
    for (header, query, parameter) in [
        (Some("-1"), "", "Last-Event-ID"),
        (Some("abc"), "?last_event_id=1", "Last-Event-ID"),
        (None, "?last_event_id=01", "last_event_id"),
        (None, "?last_event_id=99999999999999999999", "last_event_id"),
        (None, "?since=1", "since"),
    ] {
        let response = open(&app, Some(TOKEN), header, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{header:?} {query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!((body["error"].as_str(), body["parameter"].as_str()), (Some("invalid_parameter"), Some(parameter)));
    }
    let document: Value =
        app.http.get(format!("{}/v1/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
    let operation = &document["paths"]["/v1/changes"]["get"];
    assert!(operation["responses"]["200"]["content"]["text/event-stream"].is_object(), "{operation}");
    let without = spawn_app(pool.clone()).await;
    assert_eq!(open(&without, Some(TOKEN), None, "").await.status(), StatusCode::NOT_FOUND, "off without api.tokens");
}

#[sqlx::test]
async fn streams_beyond_the_limit_are_refused_with_503_until_one_closes(pool: PgPool) {
    let app = stream_app(&pool, "http://127.0.0.1:9", "[api]\nmax_change_streams = 2").await;
    let one = open(&app, Some(TOKEN), None, "").await;
    let two = open(&app, Some(TOKEN), None, "").await;
    assert_eq!((one.status(), two.status()), (StatusCode::OK, StatusCode::OK));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("seam_access_sync_change_streams_open 2"), "{metrics}");
    let third = open(&app, Some(TOKEN), None, "").await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));
    assert_eq!(third.json::<Value>().await.unwrap()["error"], "too_many_streams");
    drop(one);
    eventually("a closed stream to free its place", || async {
        let status = open(&app, Some(TOKEN), None, "").await.status();
        (status == StatusCode::OK).then_some(()).ok_or(status.to_string())
    })
    .await;
}

#[sqlx::test]
async fn an_idle_stream_gets_a_heartbeat_comment_every_15_seconds(pool: PgPool) {
    let app = stream_app(&pool, "http://127.0.0.1:9", "").await;
    let mut stream = EventStream::of(open(&app, Some(TOKEN), None, "").await);
    let started = std::time::Instant::now();
    assert_eq!(stream.next(Duration::from_secs(17)).await, Some(Sent::Comment("heartbeat".into())));
    assert!(started.elapsed() >= Duration::from_secs(14), "{:?}", started.elapsed());
}

#[sqlx::test]
async fn an_open_stream_ends_when_the_service_stops_and_does_not_hold_it(pool: PgPool) {
    let app = stream_app(&pool, "http://127.0.0.1:9", "").await;
    let mut stream = EventStream::of(open(&app, Some(TOKEN), None, "").await);
    let stopped = tokio::time::timeout(Duration::from_secs(5), app.stop()).await;
    assert!(stopped.is_ok(), "the service stopped at once, not after server.shutdown_deadline_ms");
    assert_eq!(stream.next(Duration::from_secs(2)).await, None, "the stream ended");
}
