//! Our signatures and Seam's (npm `svix` / `@seamapi/webhook`) agree both ways.

use chrono::Utc;
use seam_access_sync::seam::signature::sign;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::SECRET;

use crate::rig::{E2e, Harness};

#[sqlx::test]
async fn webhooks_signed_by_svix_pass_our_verifier(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;
    let (code, created) = fake.create_code(0, "Front door", json!({})).await;
    let id = code["access_code_id"].as_str().unwrap();

    // `/deliver` signs with npm svix's Webhook.sign and sends svix-* headers.
    e2e.deliver(&created).await;
    e2e.applied(id, &created).await;

    // The same signature under the Standard Webhooks names, in another case.
    let event = fake.event("access_code.changed", id, json!({})).await;
    let payload = serde_json::to_string(&event).unwrap();
    let msg_id = format!("msg_e2e_{}", uuid::Uuid::new_v4().simple());
    let headers = fake.sign(&payload, &msg_id, Utc::now().timestamp()).await;
    let response = e2e
        .http
        .post(e2e.service.webhook())
        .header("content-type", "application/json")
        .header("Webhook-Id", headers["svix-id"].as_str().unwrap())
        .header("Webhook-Timestamp", headers["svix-timestamp"].as_str().unwrap())
        .header("Webhook-Signature", headers["svix-signature"].as_str().unwrap())
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "accepted");
    e2e.applied(id, &event).await;

    // The check is real: another secret, or a stale timestamp, is refused.
    let url = e2e.service.webhook();
    let wrong_secret = SECRET;
    let refused = fake.deliver_with(&url, json!({ "event": event, "secret": wrong_secret })).await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (401, Some("invalid_signature")), "{refused:?}");
    let stale = fake.deliver_with(&url, json!({ "event": event, "timestamp": Utc::now().timestamp() - 301 })).await;
    assert_eq!((stale.status, stale.body["error"].as_str()), (401, Some("timestamp_too_old")), "{stale:?}");
    assert_eq!(e2e.stored_events(id).await.len(), 2);

    e2e.finish().await;
}

#[tokio::test]
async fn webhooks_we_sign_pass_seam_webhook_verify() {
    let fake = Harness::start().await;
    let secret = fake.info.webhook_secret.clone();
    let (_, created) = fake.create_code(0, "Front door", json!({})).await;
    let payload = serde_json::to_string(&created).unwrap();
    let now = Utc::now().timestamp();
    let ours = sign(&secret, "msg_e2e_ours", now, payload.as_bytes()).unwrap();

    // Byte for byte what npm svix makes.
    let theirs = fake.sign(&payload, "msg_e2e_ours", now).await;
    assert_eq!(theirs["svix-signature"], ours);

    // SeamWebhook.verify accepts it, under either header family.
    let svix = json!({ "svix-id": "msg_e2e_ours", "svix-timestamp": now.to_string(), "svix-signature": ours });
    let verdict = fake.verify(&payload, svix).await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["event"], created);
    let standard =
        json!({ "webhook-id": "msg_e2e_ours", "webhook-timestamp": now.to_string(), "webhook-signature": ours });
    assert_eq!(fake.verify(&payload, standard).await["ok"], true);

    // A rotation header (old secret's signature first) still verifies.
    let old = sign(SECRET, "msg_e2e_ours", now, payload.as_bytes()).unwrap();
    let rotating = json!({ "svix-id": "msg_e2e_ours", "svix-timestamp": now.to_string(), "svix-signature": format!("{old} {ours}") });
    assert_eq!(fake.verify(&payload, rotating).await["ok"], true);

    // And the oracle is not a rubber stamp: a changed body, or only the old secret, fails.
    let tampered = payload.replace("access_code.created", "access_code.deleted");
    let svix = json!({ "svix-id": "msg_e2e_ours", "svix-timestamp": now.to_string(), "svix-signature": ours });
    assert_eq!(fake.verify(&tampered, svix).await["ok"], false);
    let only_old = json!({ "svix-id": "msg_e2e_ours", "svix-timestamp": now.to_string(), "svix-signature": old });
    assert_eq!(fake.verify(&payload, only_old).await["ok"], false);
}
