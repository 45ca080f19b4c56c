//! Changes that touch a code without an `access_code.*` event of its own: a lock
//! that goes offline, and a late unmanaged event after the code became managed.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually;

use crate::rig::{E2e, seam_time};

/// A device event as Seam sends it (not recorded in the fake's log: delivered only).
fn device_event(event_type: &str, created: &Value, device_id: &str) -> Value {
    let now = seam_time(Utc::now());
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": event_type,
        "device_id": device_id,
        "connected_account_id": created["connected_account_id"],
        "workspace_id": created["workspace_id"],
        "created_at": now,
        "occurred_at": now,
    })
}

/// Waits until nothing is queued, so every fetch asked for has been made.
async fn queue_drained(e2e: &E2e) {
    eventually("the re-fetch queue to drain", || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM access_code_refetches").fetch_one(&e2e.db).await.unwrap();
        if pending == 0 { Ok(()) } else { Err(format!("{pending} pending")) }
    })
    .await;
}

#[sqlx::test]
async fn a_device_event_refetches_exactly_that_devices_codes(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;
    let mut on_lock = Vec::new();
    let mut created_events = Vec::new();
    for (device, name) in [(0, "Front door A"), (0, "Front door B"), (1, "Back door")] {
        let (code, created) = fake.create_code(device, name, json!({})).await;
        e2e.deliver(&created).await;
        e2e.applied(code["access_code_id"].as_str().unwrap(), &created).await;
        on_lock.push((device, code["access_code_id"].as_str().unwrap().to_owned()));
        created_events.push(created);
    }
    // The lock goes offline: Seam puts the device's problem on each of its codes and
    // sends one device event, no access_code.* event.
    let offline = json!({
        "error_code": "device_offline",
        "message": "The device is offline.",
        "is_device_error": true,
        "created_at": seam_time(Utc::now()),
    });
    for (device, id) in &on_lock {
        if *device == 0 {
            fake.set_state(id, json!({ "errors": [offline] })).await;
        }
    }
    let event = device_event("device.disconnected", &created_events[0], &fake.info.device_ids[0]);
    e2e.deliver(&event).await;

    for (device, id) in &on_lock {
        if *device == 0 {
            let row = e2e.applied(id, &event).await;
            assert_eq!(row.errors.0[0]["error_code"], "device_offline", "{id}");
            let history = e2e.history(id).await;
            assert_eq!(history.last().unwrap().event_type.as_deref(), Some("device.disconnected"));
            assert_eq!(history.last().unwrap().errors, vec!["device_offline"]);
        }
    }
    queue_drained(&e2e).await;
    let (_, other) = &on_lock[2];
    let row = e2e.mirror(other).await.unwrap();
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.created"), "the other lock's code was not fetched");
    assert_eq!(e2e.history(other).await.len(), 1);
    e2e.finish().await;
}

/// Converted to managed at 12:00, then an `access_code.unmanaged.created` that occurred
/// at 11:00 arrives late: the code stays live.
#[sqlx::test]
async fn a_late_unmanaged_event_leaves_a_converted_code_live(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;
    let (code, created) = fake.create_code(0, "Converted", json!({})).await;
    let id = code["access_code_id"].as_str().unwrap();
    e2e.deliver(&created).await;
    e2e.applied(id, &created).await;

    let now = Utc::now();
    let converted = fake.event("access_code.unmanaged.converted_to_managed", id, json!({})).await;
    e2e.deliver(&converted).await;
    e2e.applied(id, &converted).await;
    // A copy of the conversion, an hour older and of the unmanaged type (delivered
    // only, not in the fake's log).
    let mut late = converted.clone();
    late["event_type"] = json!("access_code.unmanaged.created");
    late["occurred_at"] = json!(seam_time(now - Duration::hours(1)));
    late["event_id"] = json!(uuid::Uuid::new_v4().to_string());
    e2e.deliver(&late).await;
    queue_drained(&e2e).await;

    let row = e2e.mirror(id).await.unwrap();
    assert_eq!((row.deleted_at, row.is_managed), (None, true), "{row:?}");
    assert_eq!(row.last_event_id, converted["event_id"].as_str().map(str::to_owned), "the newest event stands");
    let changes: Vec<String> = e2e.history(id).await.into_iter().map(|step| step.change).collect();
    assert!(!changes.contains(&"deleted".to_owned()), "{changes:?}");
    e2e.finish().await;
}
