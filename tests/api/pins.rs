//! What Seam sends that must not be kept as sent: PINs, wherever Seam nests them
//! (stored events, the mirror, `last_error`, the logs), and answers too large to read.
//! Webhooks in over HTTP; Seam stood in for by wiremock, or by a raw TCP server where
//! an answer must be streamed without ever being built in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use seam_access_sync::jobs::catch_up::RunOutcome;
use seam_access_sync::jobs::worker::{TaskOutcome, TaskResult};
use seam_access_sync::store::queue::Failure;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const REDACTED: &str = "[redacted]";

/// An access code as Seam answers it, with the PIN `4821` at the top and in a
/// pending `updating_code` mutation (`4821` → `9911`).
pub(crate) fn code_with_pending_mutations(id: &str) -> Value {
    fixtures::with(
        fixtures::access_code(id),
        json!({
            "name": "Guest 12",
            "code": "4821",
            "status": "setting",
            "warnings": [{"warning_code": "delay_in_setting_on_device", "message": "Hub offline"}],
            "pending_mutations": [
                {"mutation_code": "updating_code", "created_at": "2026-11-25T09:59:00.000Z",
                 "message": "Seam is pushing an updated PIN code to the device.",
                 "from": {"code": "4821"}, "to": {"code": "9911"}},
                {"mutation_code": "updating_name", "created_at": "2026-11-25T09:59:00.000Z",
                 "message": "Seam is pushing an updated name to the device.",
                 "from": {"name": "Guest"}, "to": {"name": "Guest 12"}}
            ]
        }),
    )
}

fn found(code: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "access_code": code, "ok": true }))
}

async fn seam_answering(response: ResponseTemplate) -> MockServer {
    let seam = MockServer::start().await;
    Mock::given(method("GET")).and(path("/access_codes/get")).respond_with(response).mount(&seam).await;
    seam
}

async fn stored_payload(pool: &PgPool, event_id: &str) -> Value {
    sqlx::query_scalar("SELECT payload FROM seam_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .expect("stored event")
}

async fn last_error(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>("SELECT last_error FROM access_code_refetches WHERE access_code_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("queue row")
        .expect("last_error set")
}

/// Delivers an `access_code.*` event for `id` with `fields` on top of the usual ones.
async fn deliver(app: &TestApp, event_type: &str, id: &str, fields: Value) -> Value {
    let mut event = access_code_event(event_type, id, "2026-11-25T10:00:00Z");
    event.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let response = app.deliver(&format!("msg_{}", uuid::Uuid::new_v4().simple()), &event.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap_or_default());
    event
}

#[sqlx::test]
async fn a_code_changed_webhook_stores_no_pin(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let event = deliver(
        &app,
        "access_code.code_changed",
        "ac_1",
        json!({"from": {"code": "4821"}, "to": {"code": "9911"}, "code": "9911"}),
    )
    .await;

    let payload = stored_payload(&pool, event["event_id"].as_str().unwrap()).await;
    assert_eq!(payload["from"], json!({"code": REDACTED}), "{payload}");
    assert_eq!(payload["to"], json!({"code": REDACTED}), "{payload}");
    assert_eq!(payload["code"], REDACTED);
    assert_eq!(payload["access_code_id"], "ac_1", "ids are kept");
    let mut expected = event.clone();
    for pointer in ["/from/code", "/to/code", "/code"] {
        *expected.pointer_mut(pointer).unwrap() = json!(REDACTED);
    }
    assert_eq!(payload, expected, "nothing but the PINs changed");
}

#[sqlx::test]
async fn changed_and_mutations_requested_webhooks_store_no_pin(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let changed = deliver(
        &app,
        "access_code.changed",
        "ac_1",
        json!({"change_reason": "code rotated", "changed_properties": [
            {"property": "code", "from": "51730624", "to": "62841735"},
            {"property": "name", "from": "Guest", "to": "Guest 12"}
        ]}),
    )
    .await;
    let requested = deliver(
        &app,
        "access_code.mutations_requested",
        "ac_1",
        json!({"requested_mutations": [
            {"mutation_code": "updating_code", "from": {"code": "73952846"}, "to": {"code": 84063957}},
            {"mutation_code": "deleting"}
        ]}),
    )
    .await;

    let changed = stored_payload(&pool, changed["event_id"].as_str().unwrap()).await;
    assert_eq!(
        changed["changed_properties"],
        json!([
            {"property": "code", "from": REDACTED, "to": REDACTED},
            {"property": "name", "from": "Guest", "to": "Guest 12"}
        ])
    );
    let requested = stored_payload(&pool, requested["event_id"].as_str().unwrap()).await;
    assert_eq!(
        requested["requested_mutations"],
        json!([
            {"mutation_code": "updating_code", "from": {"code": REDACTED}, "to": {"code": REDACTED}},
            {"mutation_code": "deleting"}
        ])
    );
    let logs = captured_logs();
    for pin in ["51730624", "62841735", "73952846", "84063957"] {
        assert!(!logs.contains(pin), "{pin} logged");
    }
}

#[sqlx::test]
async fn nested_pins_are_kept_when_the_user_opted_in(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), settings("http://127.0.0.1:9", "store_pins = true")).await;
    let event =
        deliver(&app, "access_code.code_changed", "ac_1", json!({"from": {"code": "4821"}, "to": {"code": "9911"}}))
            .await;
    assert_eq!(stored_payload(&pool, event["event_id"].as_str().unwrap()).await, event);
}

#[sqlx::test]
async fn a_fetched_code_with_pending_mutations_stores_no_pin(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = seam_answering(found(code_with_pending_mutations("ac_1"))).await;
    deliver(&app, "access_code.mutations_requested", "ac_1", json!({})).await;
    let (redacting, _) = worker(&pool, &seam.uri(), "");
    redacting.drain().await.unwrap();

    let (code, stored): (Option<String>, Value) =
        sqlx::query_as("SELECT code, access_code FROM access_codes WHERE access_code_id = 'ac_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(code, None);
    let mut expected = code_with_pending_mutations("ac_1");
    for pointer in ["/code", "/pending_mutations/0/from/code", "/pending_mutations/0/to/code"] {
        *expected.pointer_mut(pointer).unwrap() = json!(REDACTED);
    }
    assert_eq!(stored, expected, "the PINs and nothing else replaced");

    // Opted in, the same answer is stored whole.
    deliver(&app, "access_code.changed", "ac_1", json!({"occurred_at": "2026-11-25T10:00:01Z"})).await;
    let (keeping, _) = worker(&pool, &seam.uri(), "store_pins = true");
    keeping.drain().await.unwrap();
    let stored: Value = sqlx::query_scalar("SELECT access_code FROM access_codes WHERE access_code_id = 'ac_1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, code_with_pending_mutations("ac_1"));
}

/// A Seam answer that quotes the PIN `pin`, and what the worker must make of it.
/// The PINs have 8 digits: the logs are shared by every test of the binary, and a
/// shorter one turns up by chance in some uuid.
struct Quoting {
    name: &'static str,
    pin: &'static str,
    response: ResponseTemplate,
    dead_letter: bool,
}

fn answers_quoting_a_pin() -> Vec<Quoting> {
    let mut integer = code_with_pending_mutations("ac_1");
    integer["code"] = json!(90553117);
    vec![
        Quoting {
            name: "a 200 whose code is a number (serde's error would quote it)",
            pin: "90553117",
            response: found(integer),
            dead_letter: false,
        },
        Quoting {
            name: "a 400 whose body echoes the code",
            pin: "71684223",
            response: ResponseTemplate::new(400).set_body_json(json!({
                "error": {"type": "invalid_input", "message": "Code 71684223 is not valid for this lock",
                          "data": {"access_code": {"code": "71684223"}}},
                "ok": false
            })),
            dead_letter: true,
        },
        Quoting {
            name: "a 422 that is not Seam's error shape",
            pin: "62715334",
            response: ResponseTemplate::new(422).set_body_string(r#"{"access_code":{"code":"62715334"}}"#),
            dead_letter: true,
        },
        Quoting {
            name: "a 500 whose message quotes the code",
            pin: "53826445",
            response: ResponseTemplate::new(500).set_body_json(json!({
                "error": {"type": "internal", "message": "failed to program \"53826445\""}, "ok": false
            })),
            dead_letter: false,
        },
        Quoting {
            name: "a 404 page that quotes the code",
            pin: "44937556",
            response: ResponseTemplate::new(404).set_body_string("<html>no route for code=44937556</html>"),
            dead_letter: false,
        },
    ]
}

#[sqlx::test]
async fn a_pin_in_seams_answer_reaches_neither_last_error_nor_the_logs(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut errors = Vec::new();
    for (n, Quoting { name, pin, response, dead_letter }) in answers_quoting_a_pin().into_iter().enumerate() {
        let seam = seam_answering(response).await;
        let id = format!("ac_quoting_{n}");
        deliver(&app, "access_code.changed", &id, json!({"code": null})).await;
        let (worker, _) = worker(&pool, &seam.uri(), "");
        // Earlier rows may be due again by now: only this one's outcome counts.
        let done: Vec<TaskOutcome> = worker
            .drain()
            .await
            .unwrap()
            .into_iter()
            .filter(|o| matches!(o, TaskOutcome::Executed { access_code_id, .. } if *access_code_id == id))
            .collect();
        let expected = if dead_letter { "dead letter" } else { "retry" };
        assert!(
            matches!(
                (&done[..], dead_letter),
                ([TaskOutcome::Executed { result: TaskResult::Failed(Failure::DeadLetter), .. }], true)
                    | ([TaskOutcome::Executed { result: TaskResult::Failed(Failure::Retry { .. }), .. }], false)
            ),
            "{name}: expected a {expected}, got {done:?}"
        );
        let error = last_error(&pool, &id).await;
        assert!(!error.contains(pin), "{name}: the PIN in last_error: {error}");
        assert!(error.len() < 400, "{name}: last_error of {} bytes", error.len());
        errors.push(error);
        let logs = captured_logs();
        assert!(logs.contains(&id), "{name}: the failure was logged");
        assert!(
            !logs.contains(pin),
            "{name}: the PIN in the logs: {}",
            logs.lines().filter(|l| l.contains(pin)).collect::<Vec<_>>().join("\n")
        );
    }
    // What remains is still useful: Seam's error type and its message, scrubbed. (Read
    // as each case ended: a retried row may be fetched again from a later stand-in.)
    assert!(
        errors[0].starts_with("unreadable access_code in 200 answer: it has a field missing or of the wrong type"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[1], "HTTP 400: invalid_input: Code [redacted] is not valid for this lock");
}

/// What a raw stand-in for Seam sent before the client stopped reading.
struct Streamed {
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

const HUGE: usize = 80 * 1024 * 1024;

/// A Seam stand-in answering one request with a 200 of `HUGE` bytes of valid JSON,
/// made on the fly (never held in memory): with its `Content-Length` declared, or
/// chunked without one. Counts the bytes the client accepted.
async fn huge_answer(declare_length: bool) -> (String, Streamed) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let open = br#"{"access_code":{"access_code_id":"ac_huge","status":"set","padding":""#;
        let close = br#""},"ok":true}"#;
        let framing =
            if declare_length { format!("content-length: {HUGE}") } else { "transfer-encoding: chunked".to_owned() };
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < HUGE {
            let mut data = piece.clone();
            if written == 0 {
                data[..open.len()].copy_from_slice(open);
            }
            let left = HUGE - written;
            if left <= data.len() {
                data.truncate(left);
                let at = data.len() - close.len();
                data[at..].copy_from_slice(close);
            }
            let framed = if declare_length {
                data.clone()
            } else {
                [format!("{:x}\r\n", data.len()).as_bytes(), &data, b"\r\n"].concat()
            };
            if stream.write_all(&framed).await.is_err() {
                return;
            }
            written += data.len();
            counter.store(written, Ordering::SeqCst);
        }
        if !declare_length {
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
        // Keep the connection until the client is done with it.
        let _ = stream.read(&mut buffer).await;
    });
    (url, Streamed { sent, task })
}

#[sqlx::test]
async fn an_80_mib_answer_is_refused_without_reading_it_whole(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for declare_length in [false, true] {
        let (url, streamed) = huge_answer(declare_length).await;
        let id = "ac_huge";
        sqlx::query("DELETE FROM access_code_refetches").execute(&pool).await.unwrap();
        deliver(&app, "access_code.changed", id, json!({})).await;
        let (worker, _) = worker(&pool, &url, "");
        let done = worker.drain().await.unwrap();
        assert!(
            matches!(&done[..], [TaskOutcome::Executed { result: TaskResult::Failed(Failure::Retry { .. }), .. }]),
            "declared length {declare_length}: {done:?}"
        );
        let error = last_error(&pool, id).await;
        assert!(error.contains("too large") && error.contains("1048576"), "declared length {declare_length}: {error}");
        tokio::time::timeout(Duration::from_secs(10), streamed.task).await.expect("the stand-in stops").unwrap();
        let sent = streamed.sent.load(Ordering::SeqCst);
        println!("declared length {declare_length}: {} KiB sent before the client stopped reading", sent / 1024);
        assert!(sent < HUGE / 4, "declared length {declare_length}: {} MiB sent of 80", sent / (1024 * 1024));
        let mirrored: i64 = sqlx::query_scalar("SELECT count(*) FROM access_codes").fetch_one(&pool).await.unwrap();
        assert_eq!(mirrored, 0, "nothing stored");
    }
}

/// An access-code answer of exactly `size` bytes.
fn answer_of(id: &str, size: usize) -> String {
    let empty = json!({"access_code": {"access_code_id": id, "status": "set", "padding": ""}, "ok": true}).to_string();
    let padded = json!({"access_code": {"access_code_id": id, "status": "set", "padding": "x".repeat(size - empty.len())}, "ok": true});
    let text = padded.to_string();
    assert_eq!(text.len(), size);
    text
}

#[sqlx::test]
async fn an_answer_one_byte_over_the_limit_is_refused_and_one_at_it_is_read(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let limit = 4096;
    let extra = format!("[seam]\nmax_response_bytes = {limit}");
    for (size, stored) in [(limit + 1, false), (limit, true)] {
        let id = format!("ac_size_{size}");
        let seam = seam_answering(
            ResponseTemplate::new(200).set_body_raw(answer_of(&id, size).into_bytes(), "application/json"),
        )
        .await;
        deliver(&app, "access_code.changed", &id, json!({})).await;
        let (worker, _) = worker(&pool, &seam.uri(), &extra);
        let done = worker.drain().await.unwrap();
        let mirrored: i64 = sqlx::query_scalar("SELECT count(*) FROM access_codes WHERE access_code_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mirrored, i64::from(stored), "{size} bytes: {done:?}");
        if !stored {
            let error = last_error(&pool, &id).await;
            assert!(error.contains("too large") && error.contains("4096"), "{error}");
        }
    }
    // An error answer over the limit says its status too.
    let seam = seam_answering(ResponseTemplate::new(503).set_body_string("e".repeat(limit + 1))).await;
    deliver(&app, "access_code.changed", "ac_size_503", json!({})).await;
    let (worker, _) = worker(&pool, &seam.uri(), &extra);
    worker.drain().await.unwrap();
    let error = last_error(&pool, "ac_size_503").await;
    assert!(error.starts_with("HTTP 503") && error.contains("too large"), "{error}");
}

fn padded_event(n: usize, padding: usize) -> Value {
    let at =
        (Utc::now() - chrono::Duration::minutes(60 - n as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut event = access_code_event("access_code.set_on_device", &format!("ac_log_{n}"), &at);
    event["event_description"] = json!("d".repeat(padding));
    event
}

#[sqlx::test]
async fn catch_up_splits_an_events_page_over_the_limit_and_gives_up_clearly_on_one_event_over_it(pool: PgPool) {
    let _app = spawn_app(pool.clone()).await;
    let extra = "[seam]\nmax_response_bytes = 4096";
    // Ten events of about 1 KiB: a page of all ten is over the limit, a few fit.
    let seam = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/events/list"))
        .respond_with(event_log((0..10).map(|n| padded_event(n, 700)).collect()))
        .mount(&seam)
        .await;
    let (splitting, _) = catch_up(&pool, &seam.uri(), extra);
    let outcome = splitting.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { found: 10, new: 10, .. }), "{outcome:?}");
    assert_eq!(count(&pool, "seam_events").await, 10);

    // One event alone over the limit: no window is small enough; the run fails and says why.
    // (Two minutes ago: after the mark the first run left, less the overlap.)
    let seam = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/events/list"))
        .respond_with(event_log(vec![padded_event(58, 8192)]))
        .mount(&seam)
        .await;
    let (giving_up, _) = catch_up(&pool, &seam.uri(), extra);
    let error = giving_up.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("too large"), "{error:#}");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM catch_up_state").fetch_one(&pool).await.unwrap();
    assert!(last_error.unwrap().contains("too large"));

    // An error answer over the limit is a failure, not a reason to ask for a smaller window.
    let seam = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/events/list"))
        .respond_with(ResponseTemplate::new(500).set_body_string("e".repeat(8192)))
        .expect(1)
        .mount(&seam)
        .await;
    let (failing, _) = catch_up(&pool, &seam.uri(), extra);
    let error = failing.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("HTTP 500"), "{error:#}");
}
