//! At-least-once, out-of-order delivery, as Svix does it.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::rig::{E2e, Step, seam_time, time};

#[sqlx::test]
async fn the_same_message_delivered_three_times_is_stored_once(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;
    let (code, created) = fake.create_code(0, "Front door", json!({})).await;
    let id = code["access_code_id"].as_str().unwrap();
    e2e.deliver(&created).await;
    e2e.applied(id, &created).await;

    fake.set_state(id, json!({ "status": "set" })).await;
    let set = fake.event("access_code.set_on_device", id, json!({})).await;
    // Svix retries a message with the same id, a new timestamp and so a new signature.
    let msg_id = format!("msg_e2e_{}", uuid::Uuid::new_v4().simple());
    let now = Utc::now().timestamp();
    let mut answers = Vec::new();
    for timestamp in [now - 20, now - 10, now] {
        let delivery = fake
            .deliver_with(&e2e.service.webhook(), json!({ "event": set, "msg_id": msg_id, "timestamp": timestamp }))
            .await;
        assert_eq!(delivery.status, 200, "every attempt is acknowledged: {delivery:?}");
        assert_eq!(delivery.msg_id, msg_id);
        answers.push(delivery.body["status"].as_str().unwrap_or("?").to_owned());
    }
    assert_eq!(answers, ["accepted", "duplicate", "duplicate"]);

    let row = e2e.applied(id, &set).await;
    assert_eq!(row.status.as_deref(), Some("set"));
    let row = e2e.settled(id).await;
    assert_eq!(row.status.as_deref(), Some("set"));

    let stored = e2e.stored_events(id).await;
    assert_eq!(stored.len(), 2, "created + one set_on_device: {stored:?}");
    assert_eq!(stored[1].0, set["event_id"].as_str().unwrap());
    assert_eq!(stored[1].1.as_deref(), Some(msg_id.as_str()));
    assert_eq!(
        e2e.history(id).await,
        vec![
            Step::new("created", None, Some("setting"), "access_code.created"),
            Step::new("changed", Some("setting"), Some("set"), "access_code.set_on_device"),
        ]
    );

    e2e.finish().await;
}

#[sqlx::test]
async fn events_delivered_in_reverse_order_leave_the_mirror_on_the_fakes_final_state(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;
    let later = |event: &Value, seconds: i64| seam_time(time(&event["occurred_at"]) + Duration::seconds(seconds));

    // Code A: created → delayed (warning) → set (warning cleared). Nothing delivered yet.
    let (a, a_created) = fake.create_code(0, "A: delayed, then set", json!({})).await;
    let a_id = a["access_code_id"].as_str().unwrap();
    // As Seam documents a warning: with the time it was raised.
    let warning = json!({ "warning_code": "delay_in_setting_on_device", "message": "slow lock", "created_at": seam_time(Utc::now()) });
    fake.set_state(a_id, json!({ "warnings": [warning] })).await;
    let a_delay = fake
        .event(
            "access_code.delay_in_setting_on_device",
            a_id,
            json!({ "occurred_at": later(&a_created, 1), "access_code_warnings": [warning] }),
        )
        .await;
    fake.set_state(a_id, json!({ "status": "set", "warnings": [] })).await;
    let a_set = fake.event("access_code.set_on_device", a_id, json!({ "occurred_at": later(&a_created, 2) })).await;

    // Code B: created → set → removed (gone from Seam).
    let (b, b_created) = fake.create_code(1, "B: set, then removed", json!({})).await;
    let b_id = b["access_code_id"].as_str().unwrap();
    fake.set_state(b_id, json!({ "status": "set" })).await;
    let b_set = fake.event("access_code.set_on_device", b_id, json!({ "occurred_at": later(&b_created, 1) })).await;
    fake.delete_code(b_id).await;
    let b_removed =
        fake.event("access_code.removed_from_device", b_id, json!({ "occurred_at": later(&b_created, 2) })).await;

    // Newest first.
    for event in [&a_set, &a_delay, &a_created, &b_removed, &b_set, &b_created] {
        e2e.deliver(event).await;
    }

    // A ends as the fake has it now: set, no warning; the mirror names the newest event.
    let row = e2e.settled(a_id).await;
    let (status, now_in_fake) = fake.fake_get(a_id).await;
    assert_eq!(status, 200);
    assert_eq!(row.status.as_deref(), Some("set"));
    assert_eq!((row.warnings.0.clone(), row.errors.0.clone()), (json!([]), json!([])));
    let mut expected = now_in_fake.clone();
    expected["code"] = json!("[redacted]");
    assert_eq!(row.access_code.as_ref().unwrap().0, expected, "the mirror holds what the fake answers");
    assert_eq!(row.last_event_id.as_deref(), a_set["event_id"].as_str(), "the newest event, whatever the order");
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.set_on_device"));
    // Every fetch saw the final state: the mirror never went backwards.
    assert_eq!(e2e.history(a_id).await, vec![Step::new("created", None, Some("set"), "access_code.set_on_device")]);

    // B ends deleted, never resurrected by the older events that came after.
    let row = e2e.settled(b_id).await;
    assert_eq!(fake.fake_get(b_id).await.0, 404);
    assert!(row.deleted_at.is_some(), "{row:?}");
    assert_eq!(row.last_event_id.as_deref(), b_removed["event_id"].as_str());
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.removed_from_device"));
    assert_eq!(e2e.history(b_id).await, vec![Step::new("deleted", None, None, "access_code.removed_from_device")]);

    assert_eq!(e2e.stored_events(a_id).await.len(), 3);
    assert_eq!(e2e.stored_events(b_id).await.len(), 3);

    e2e.finish().await;
}
