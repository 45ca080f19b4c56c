//! A Seam API key that stops working: reported, nothing lost, caught up once fixed.

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually;

use crate::rig::E2e;

/// Waits until `/readyz` answers `status`; returns its body.
async fn readiness(e2e: &E2e, status: u16) -> Value {
    eventually(&format!("/readyz to answer {status}"), || async {
        match e2e.readyz().await {
            (s, body) if s == status => Ok(body),
            (s, body) => Err(format!("{s} {body}")),
        }
    })
    .await
}

/// A code mirrored as `setting`, then set in the fake with its set_on_device
/// delivered while the service's key is rejected: returns the code id and the event.
async fn set_while_the_key_is_rejected(e2e: &E2e) -> (String, Value) {
    let fake = &e2e.harness;
    let (code, created) = fake.create_code(0, "Front door", json!({})).await;
    let id = code["access_code_id"].as_str().unwrap().to_owned();
    e2e.deliver(&created).await;
    assert_eq!(e2e.applied(&id, &created).await.status.as_deref(), Some("setting"));
    assert_eq!(readiness(e2e, 200).await["ready"], true);

    let (old_key, new_key) = fake.rotate_key().await;
    assert_eq!(old_key, fake.info.api_key, "the service's key is the one revoked");
    assert_ne!(new_key, old_key);

    fake.set_state(&id, json!({ "status": "set" })).await;
    let set = fake.event("access_code.set_on_device", &id, json!({})).await;
    // Intake needs no Seam key: the webhook is still accepted and stored.
    e2e.deliver(&set).await;

    // Readiness names the key.
    let body = readiness(e2e, 503).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"]["ok"], true);
    assert_eq!(body["seam_api_key"]["ok"], false);
    let reason = body["seam_api_key"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("API key") && reason.contains("401"), "{body}");

    // The work is kept (not dead-lettered), and the mirror is not touched.
    // (Readiness can flip a moment before the failed attempt is written back.)
    let queued = eventually("the failed attempt to be recorded on the re-fetch", || async {
        match e2e.queue_row(&id).await {
            Some(row) if row["last_error"].as_str().is_some_and(|e| e.contains("API key rejected")) => Ok(row),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(queued["dead_lettered_at"], Value::Null, "{queued}");
    // Naming Seam's request, to quote to Seam support.
    let error = queued["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(" (seam-request-id: "), "{queued}");
    assert_eq!(e2e.mirror(&id).await.unwrap().status.as_deref(), Some("setting"));
    // And the logs say what to fix.
    let logs = e2e.service.logs();
    assert!(
        logs.lines().any(|line| line.contains("Seam rejected the API key") && line.contains("workspace=SEAM_API_KEY")),
        "no log names SEAM_API_KEY"
    );
    (id, set)
}

#[sqlx::test]
async fn a_revoked_key_shows_in_readiness_and_the_mirror_catches_up_once_it_is_restored(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let e2e = E2e::start(database).await;
    let (id, set) = set_while_the_key_is_rejected(&e2e).await;

    // Seam accepts the key again (e.g. it was restored in the console): the worker's
    // next retry goes through, with no restart and no redelivery.
    let key = e2e.harness.info.api_key.clone();
    e2e.harness.add_key(&key).await;
    let row = e2e.applied(&id, &set).await;
    assert_eq!(row.status.as_deref(), Some("set"));
    let body = readiness(&e2e, 200).await;
    assert_eq!(body["seam_api_key"]["ok"], true, "{body}");
    assert_eq!(e2e.settled(&id).await.status.as_deref(), Some("set"));

    e2e.finish().await;
}

#[sqlx::test]
async fn after_a_key_rotation_a_restart_with_the_new_key_catches_up(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let (id, set) = set_while_the_key_is_rejected(&e2e).await;

    // The operator sets SEAM_API_KEY to the new key and restarts the service: the
    // re-fetch kept in Postgres is done by the new process.
    let new_key =
        e2e.harness.call(reqwest::Method::POST, "/api_keys", json!({})).await["token"].as_str().unwrap().to_owned();
    let e2e = e2e.restart_with_key(&new_key).await;
    let row = e2e.applied(&id, &set).await;
    assert_eq!(row.status.as_deref(), Some("set"));
    assert_eq!(readiness(&e2e, 200).await["ready"], true);
    assert_eq!(e2e.settled(&id).await.status.as_deref(), Some("set"));

    e2e.finish().await;
}
