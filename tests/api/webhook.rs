//! `POST /webhooks/seam`, driven over HTTP against a real Postgres.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON error body");
    body["error"].as_str().expect("error code").to_owned()
}

#[sqlx::test]
async fn a_signed_access_code_event_is_stored_and_queued(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let event = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z");

    let response = app.deliver("msg_1", &event.to_string()).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    let (event_type, delivery_id, action): (String, String, String) =
        sqlx::query_as("SELECT event_type, delivery_id, action FROM seam_events").fetch_one(&pool).await.unwrap();
    assert_eq!(
        (event_type.as_str(), delivery_id.as_str(), action.as_str()),
        ("access_code.set_on_device", "msg_1", "refetch")
    );
    let (code_id, endpoint, requests, last_event): (String, String, i64, String) =
        sqlx::query_as("SELECT access_code_id, endpoint, requests, last_event_id FROM access_code_refetches")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((code_id.as_str(), endpoint.as_str(), requests), ("ac_1", "managed", 1));
    assert_eq!(last_event, event["event_id"].as_str().unwrap());
}

#[sqlx::test]
async fn every_access_code_event_type_even_a_new_one_is_queued(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let types = [
        "created",
        "changed",
        "name_changed",
        "code_changed",
        "time_frame_changed",
        "mutations_requested",
        "scheduled_on_device",
        "set_on_device",
        "removed_from_device",
        "delay_in_setting_on_device",
        "failed_to_set_on_device",
        "deleted",
        "delay_in_removing_from_device",
        "failed_to_remove_from_device",
        "modified_external_to_seam",
        "deleted_external_to_seam",
        "backup_access_code_pulled",
        "unmanaged.converted_to_managed",
        "unmanaged.failed_to_convert_to_managed",
        "unmanaged.created",
        "unmanaged.removed",
        "invented_in_2027",
    ];
    for (i, suffix) in types.iter().enumerate() {
        let event = access_code_event(&format!("access_code.{suffix}"), &format!("ac_{i}"), "2026-11-25T10:00:00Z");
        assert_eq!(app.deliver(&format!("msg_{i}"), &event.to_string()).await.status(), StatusCode::OK, "{suffix}");
    }
    // One each, and `backup_access_code_pulled` asks for the backup code it names too.
    assert_eq!(count(&pool, "access_code_refetches").await, types.len() as i64 + 1);
    let unmanaged: Vec<(String,)> =
        sqlx::query_as("SELECT access_code_id FROM access_code_refetches WHERE endpoint = 'unmanaged' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(unmanaged.len(), 3, "unmanaged.* but converted_to_managed: {unmanaged:?}");
}

#[sqlx::test]
async fn other_event_families_are_stored_as_ignored_and_never_queued(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let event =
        json!({"event_id": "ev_dev", "event_type": "device.low_battery", "device_id": "d1", "workspace_id": "w"});
    let response = app.deliver("msg_dev", &event.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let action: String = sqlx::query_scalar("SELECT action FROM seam_events").fetch_one(&pool).await.unwrap();
    assert_eq!(action, "ignored");
    assert_eq!(count(&pool, "access_code_refetches").await, 0);
}

#[sqlx::test]
async fn a_redelivery_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = access_code_event("access_code.created", "ac_1", "2026-11-25T10:00:00Z").to_string();
    assert_eq!(app.deliver("msg_1", &body).await.status(), StatusCode::OK);
    // Svix retries with a new timestamp and signature but the same id.
    app.clock.set(NOW + 5);
    let again = app.deliver("msg_1", &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");
    assert_eq!(written(&pool).await, (1, 1, 0));
    let requests: i64 =
        sqlx::query_scalar("SELECT requests FROM access_code_refetches").fetch_one(&pool).await.unwrap();
    assert_eq!(requests, 1, "a duplicate does not count as another request");
}

#[sqlx::test]
async fn the_same_delivery_sent_20_times_at_once_leaves_one_event_and_one_refetch(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string();
    let sends = (0..20).map(|_| app.deliver("msg_same", &body));
    let statuses: Vec<StatusCode> = futures::future::join_all(sends).await.into_iter().map(|r| r.status()).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(written(&pool).await, (1, 1, 0));
}

#[sqlx::test]
async fn ten_events_for_one_code_leave_one_pending_refetch(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for i in 0..10 {
        let event = access_code_event("access_code.changed", "ac_1", &format!("2026-11-25T10:00:0{i}Z"));
        assert_eq!(app.deliver(&format!("msg_{i}"), &event.to_string()).await.status(), StatusCode::OK);
    }
    assert_eq!(count(&pool, "seam_events").await, 10);
    let (rows, requests): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(requests)::bigint FROM access_code_refetches")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, requests), (1, 10));
}

#[sqlx::test]
async fn the_newest_event_is_the_one_the_queue_names_whatever_the_arrival_order(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let newest = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:09Z");
    let older = access_code_event("access_code.created", "ac_1", "2026-11-25T10:00:01Z");
    app.deliver("msg_new", &newest.to_string()).await;
    app.deliver("msg_old", &older.to_string()).await;
    let last_type: String =
        sqlx::query_scalar("SELECT last_event_type FROM access_code_refetches").fetch_one(&pool).await.unwrap();
    assert_eq!(last_type, "access_code.set_on_device");
}

/// One row of the answer table: a request, the status and error it must get.
/// `abuse.rs` runs these rows too, inside its larger table of hostile requests.
pub(crate) struct Rejection {
    pub(crate) name: &'static str,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
}

fn signed(message_id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    svix_headers(SECRET, message_id, timestamp, body)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn without(mut headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    headers.retain(|(n, _)| n != name);
    headers
}

fn replaced(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    for (n, v) in headers.iter_mut() {
        if n == name {
            *v = value.into();
        }
    }
    headers
}

pub(crate) fn rejections() -> Vec<Rejection> {
    let good = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string().into_bytes();
    let ok_headers = signed("msg_bad", NOW, &good);
    let body_of = |v: Value| v.to_string().into_bytes();
    let signed_body = |body: Vec<u8>, status, error, name| Rejection {
        name,
        headers: signed("msg_bad", NOW, &body),
        body,
        status,
        error,
    };
    vec![
        Rejection {
            name: "no signature headers",
            headers: vec![],
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "missing_header",
        },
        Rejection {
            name: "no id",
            headers: without(ok_headers.clone(), "svix-id"),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "missing_header",
        },
        Rejection {
            name: "no timestamp",
            headers: without(ok_headers.clone(), "svix-timestamp"),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "missing_header",
        },
        Rejection {
            name: "no signature",
            headers: without(ok_headers.clone(), "svix-signature"),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "missing_header",
        },
        Rejection {
            name: "timestamp not a number",
            headers: replaced(ok_headers.clone(), "svix-timestamp", "soon"),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "malformed_header",
        },
        Rejection {
            name: "negative timestamp",
            headers: replaced(ok_headers.clone(), "svix-timestamp", "-1"),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "malformed_header",
        },
        Rejection {
            name: "huge timestamp",
            headers: replaced(ok_headers.clone(), "svix-timestamp", "99999999999999999999999"),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "malformed_header",
        },
        Rejection {
            name: "oversized signature header",
            headers: replaced(ok_headers.clone(), "svix-signature", &"v1,AAAA ".repeat(1000)),
            body: good.clone(),
            status: StatusCode::BAD_REQUEST,
            error: "malformed_header",
        },
        Rejection {
            name: "wrong signature",
            headers: replaced(ok_headers.clone(), "svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            body: good.clone(),
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_signature",
        },
        Rejection {
            name: "empty v1 signature",
            headers: replaced(ok_headers.clone(), "svix-signature", "v1,"),
            body: good.clone(),
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_signature",
        },
        Rejection {
            name: "signature of another secret",
            headers: replaced(ok_headers.clone(), "svix-signature", &sign(NEW_SECRET, "msg_bad", NOW, &good)),
            body: good.clone(),
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_signature",
        },
        Rejection {
            name: "signature for another id",
            headers: replaced(ok_headers.clone(), "svix-id", "msg_other"),
            body: good.clone(),
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_signature",
        },
        Rejection {
            name: "body changed after signing",
            headers: ok_headers.clone(),
            body: serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&good).unwrap()).unwrap(),
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_signature",
        },
        Rejection {
            name: "timestamp 301 s old",
            headers: signed("msg_bad", NOW - 301, &good),
            body: good.clone(),
            status: StatusCode::UNAUTHORIZED,
            error: "timestamp_too_old",
        },
        Rejection {
            name: "timestamp 301 s ahead",
            headers: signed("msg_bad", NOW + 301, &good),
            body: good.clone(),
            status: StatusCode::UNAUTHORIZED,
            error: "timestamp_in_future",
        },
        signed_body(b"not json".to_vec(), StatusCode::BAD_REQUEST, "invalid_event", "body not JSON"),
        signed_body(vec![0xff, 0xfe, 0x00], StatusCode::BAD_REQUEST, "invalid_event", "body not UTF-8"),
        signed_body(b"[]".to_vec(), StatusCode::BAD_REQUEST, "invalid_event", "body a JSON array"),
        signed_body(
            body_of(json!({"event_type": "access_code.created", "access_code_id": "a"})),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "no event_id",
        ),
        signed_body(
            body_of(json!({"event_id": "e", "access_code_id": "a"})),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "no event_type",
        ),
        signed_body(
            body_of(json!({"event_id": "e", "event_type": "access_code.set_on_device"})),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "access_code.* without access_code_id",
        ),
        signed_body(
            body_of(
                json!({"event_id": "e", "event_type": "access_code.created", "access_code_id": "x".repeat(10_000)}),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "10 KB access_code_id",
        ),
        signed_body(
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "deeply nested body",
        ),
        signed_body(vec![b' '; 256 * 1024 + 1], StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "body over the limit"),
    ]
}

#[sqlx::test]
async fn every_bad_request_gets_its_answer_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let cases = rejections();
    assert!(cases.len() >= 20);
    for case in cases {
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let response = app.post_webhook(&headers, case.body).await;
        assert_eq!(response.status(), case.status, "{}", case.name);
        assert_eq!(error_code(response).await, case.error, "{}", case.name);
        assert_eq!(written(&pool).await, (0, 0, 0), "{} wrote something", case.name);
    }
    // The service is still healthy afterwards.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[sqlx::test]
async fn a_body_over_the_limit_without_content_length_is_cut_off(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..300).map(|_| Ok(vec![b' '; 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = app
        .http
        .post(format!("{}/webhooks/seam", app.address))
        .header("svix-id", "msg_big")
        .header("svix-timestamp", NOW.to_string())
        .header("svix-signature", "v1,AAAA")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(response).await, "body_too_large");
    assert_eq!(written(&pool).await, (0, 0, 0));
}

#[sqlx::test]
async fn webhook_header_names_work_as_well_as_svix_ones(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = access_code_event("access_code.created", "ac_1", "2026-11-25T10:00:00Z").to_string();
    let signature = sign(SECRET, "msg_std", NOW, body.as_bytes());
    let response = app
        .post_webhook(
            &[("Webhook-Id", "msg_std"), ("WEBHOOK-TIMESTAMP", &NOW.to_string()), ("webhook-signature", &signature)],
            body.into_bytes(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(count(&pool, "seam_events").await, 1);
}

#[sqlx::test]
async fn both_secrets_of_a_rotation_are_accepted(pool: PgPool) {
    let settings = settings("http://127.0.0.1:9", &format!("[webhook]\nsecret = \"{SECRET}, {NEW_SECRET}\""));
    let app = spawn_app_with(pool.clone(), settings).await;
    for (i, secret) in [SECRET, NEW_SECRET].into_iter().enumerate() {
        let body = access_code_event("access_code.created", &format!("ac_{i}"), "2026-11-25T10:00:00Z").to_string();
        let id = format!("msg_rot_{i}");
        let signature = sign(secret, &id, NOW, body.as_bytes());
        let response = app
            .post_webhook(
                &[("svix-id", &id), ("svix-timestamp", &NOW.to_string()), ("svix-signature", &signature)],
                body.into_bytes(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "secret #{i}");
    }
    assert_eq!(count(&pool, "seam_events").await, 2);
}

#[sqlx::test]
async fn the_pin_is_neither_stored_nor_logged_by_default(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut event = access_code_event("access_code.set_on_device", "ac_pin", "2026-11-25T10:00:00Z");
    event["code"] = json!("86420975");
    let response = app.deliver("msg_pin", &event.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stored: Value = sqlx::query_scalar("SELECT payload FROM seam_events").fetch_one(&pool).await.unwrap();
    assert_eq!(stored["code"], "[redacted]");
    assert!(!stored.to_string().contains("86420975"));
    let logs = captured_logs();
    assert!(logs.contains(event["event_id"].as_str().unwrap()), "the delivery was logged");
    assert!(!logs.contains("86420975"), "the PIN is not in the logs");
    assert!(!logs.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "the secret is not in the logs");
}

#[sqlx::test]
async fn the_pin_is_stored_when_the_user_opts_in(pool: PgPool) {
    let settings = settings("http://127.0.0.1:9", "store_pins = true");
    let app = spawn_app_with(pool.clone(), settings).await;
    let event = access_code_event("access_code.set_on_device", "ac_pin", "2026-11-25T10:00:00Z");
    assert_eq!(app.deliver("msg_pin", &event.to_string()).await.status(), StatusCode::OK);
    let stored: Value = sqlx::query_scalar("SELECT payload FROM seam_events").fetch_one(&pool).await.unwrap();
    assert_eq!(stored["code"], "4321");
}

#[sqlx::test]
async fn with_the_database_down_a_delivery_gets_503_and_succeeds_once_it_is_back(pool: PgPool) {
    let proxy = DatabaseProxy::start(postgres_address(&pool)).await;
    let app = spawn_app_with(proxy.pool(&pool), settings("http://127.0.0.1:9", "")).await;
    let body = access_code_event("access_code.set_on_device", "ac_1", "2026-11-25T10:00:00Z").to_string();

    proxy.down();
    let response = app.deliver("msg_outage", &body).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "10");
    assert_eq!(error_code(response).await, "database_unavailable");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"]["ok"], false);
    assert_eq!(written(&pool).await, (0, 0, 0));

    proxy.up();
    let retried = app.deliver("msg_outage", &body).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(written(&pool).await, (1, 1, 0));
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}

#[sqlx::test]
async fn health_and_readiness_answer(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().contains_key("x-request-id"));
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["database"]["ok"], true);
}

#[sqlx::test]
async fn wrong_methods_and_paths_are_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    assert_eq!(app.get("/webhooks/seam").await.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.get("/webhooks/other").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(written(&pool).await, (0, 0, 0));
}

#[sqlx::test]
async fn a_graceful_stop_finishes_and_closes(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = access_code_event("access_code.created", "ac_1", "2026-11-25T10:00:00Z").to_string();
    assert_eq!(app.deliver("msg_1", &body).await.status(), StatusCode::OK);
    let address = app.address.clone();
    app.stop().await;
    assert!(reqwest::get(format!("{address}/healthz")).await.is_err(), "no longer accepting");
}
