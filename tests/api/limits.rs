//! What an open port must withstand without a secret (issue 12): bounded metric
//! labels, slow or idle connections closed, a connection cap that queues, request
//! timeouts answered as documented, and readiness details kept from strangers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(received)
}

#[sqlx::test]
async fn request_methods_and_paths_cannot_grow_the_metrics(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let client = reqwest::Client::new();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("M{i}{}", "X".repeat(200)).as_bytes()).unwrap();
        let answer = client.request(method, format!("{}/healthz", app.address)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        let path = format!("/no/such/path/{i}");
        assert_eq!(app.get(&path).await.status(), StatusCode::NOT_FOUND);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let series: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("seam_access_sync_http_request_duration_seconds_count")).collect();
    assert!(series.len() <= 4, "{series:#?}");
    assert!(series.iter().any(|l| l.contains("method=\"other\"") && l.contains("route=\"/healthz\"")), "{series:#?}");
    assert!(series.iter().any(|l| l.contains("route=\"unmatched\"")), "{series:#?}");
    assert!(!metrics.contains("XXXX") && !metrics.contains("/no/such/path"), "a client's text became a label");
    assert!(metrics.len() < 100 * 1024, "/metrics is {} bytes", metrics.len());
    assert!(!captured_logs().contains(&"X".repeat(200)), "a long method was logged whole");
}

#[sqlx::test]
async fn a_connection_that_never_finishes_its_headers_is_closed(pool: PgPool) {
    let settings = settings_with("http://127.0.0.1:9", &["[server]\nheader_read_timeout_ms = 300"]);
    let app = spawn_app_with(pool.clone(), settings).await;
    let mut slow = TcpStream::connect(host_port(&app)).await.unwrap();
    slow.write_all(b"POST /webhooks/seam HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let answer = answer.expect("the server closed the connection");
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    // An idle keep-alive connection (no request at all) is closed the same way.
    let mut idle = TcpStream::connect(host_port(&app)).await.unwrap();
    assert!(read_until_closed(&mut idle, Duration::from_secs(10)).await.is_some(), "an idle connection stayed open");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[sqlx::test]
async fn at_the_connection_cap_new_connections_wait_and_are_then_served(pool: PgPool) {
    let settings =
        settings_with("http://127.0.0.1:9", &["[server]\nmax_connections = 2\nheader_read_timeout_ms = 500"]);
    let app = spawn_app_with(pool.clone(), settings).await;
    // Two silent connections take the two places.
    let _first = TcpStream::connect(host_port(&app)).await.unwrap();
    let _second = TcpStream::connect(host_port(&app)).await.unwrap();
    // A third is accepted by the kernel and served once a place frees up (the
    // silent ones are closed by the header-read timeout), not refused or crashed.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let answer = client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}

#[sqlx::test]
async fn a_request_that_runs_out_of_time_gets_the_documented_answer(pool: PgPool) {
    let settings = settings_with(
        "http://127.0.0.1:9",
        &["[server]\nrequest_timeout_ms = 300\nbody_read_timeout_ms = 5000\nretry_after_seconds = 7"],
    );
    let app = spawn_app_with(pool.clone(), settings).await;
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    // A body that never finishes: the request timeout fires before the body's.
    stream
        .write_all(b"POST /webhooks/seam HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\"")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("}") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await.unwrap().unwrap();
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&received).to_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 7"), "{text}");
    assert!(text.contains("content-type: application/json"), "{text}");
    let body: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(body["error"], "request_timeout");
    assert_eq!(written(&pool).await, (0, 0, 0));
}

#[sqlx::test]
async fn the_bearer_scheme_is_case_insensitive(pool: PgPool) {
    let token = "case-insensitive-token-0123456789abcdef";
    let settings = settings_with("http://127.0.0.1:9", &[&format!("[api]\ntokens = \"{token}\"")]);
    let app = spawn_app_with(pool.clone(), settings).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let answer = app
            .http
            .get(format!("{}/v1/access_codes", app.address))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{scheme}");
    }
    for wrong in [format!("Basic {token}"), format!("Bearer{token}"), token.to_owned()] {
        let answer =
            app.http.get(format!("{}/v1/access_codes", app.address)).header("authorization", &wrong).send().await;
        assert_eq!(answer.unwrap().status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
}
