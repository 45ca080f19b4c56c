//! A code's life, step by step, as the mirror and its history record it.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::rig::{E2e, Step, seam_time, time};

#[sqlx::test]
async fn a_code_is_mirrored_from_creation_through_delay_failure_success_and_removal(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;

    // Created in the fake → access_code.created → mirrored as `setting`.
    let (code, created) = fake.create_code(0, "Front door", json!({ "code": "4321" })).await;
    let id = code["access_code_id"].as_str().unwrap();
    assert_eq!(code["status"], "setting");
    e2e.deliver(&created).await;
    let row = e2e.applied(id, &created).await;
    assert_eq!(row.access_code_id, id);
    assert_eq!(row.status.as_deref(), Some("setting"));
    assert_eq!(row.name.as_deref(), Some("Front door"));
    assert_eq!(row.kind.as_deref(), Some("ongoing"));
    assert_eq!(row.device_id.as_deref(), Some(fake.info.device_ids[0].as_str()));
    assert_eq!(row.workspace_id.as_deref(), Some(fake.info.workspace_id.as_str()));
    assert!(row.is_managed);
    assert_eq!((row.warnings.0.clone(), row.errors.0.clone()), (json!([]), json!([])));
    assert_eq!(row.deleted_at, None);
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.created"));
    assert_eq!(row.last_event_occurred_at, Some(time(&created["occurred_at"])));
    // store_pins is off: the PIN is in neither the mirror's column nor its copy of the code.
    assert_eq!(row.code, None);
    assert_eq!(row.access_code.as_ref().unwrap().0["code"], "[redacted]");

    // The lock is slow: delay_in_setting_on_device with a warning.
    let warning = json!({
        "warning_code": "delay_in_setting_on_device",
        "message": "Code programming is delayed; the lock has not confirmed it yet.",
        "created_at": seam_time(Utc::now()),
    });
    let row = e2e
        .step(
            id,
            json!({ "warnings": [warning] }),
            "access_code.delay_in_setting_on_device",
            json!({ "access_code_warnings": [warning] }),
        )
        .await;
    assert_eq!(row.status.as_deref(), Some("setting"));
    assert_eq!(row.warnings.0, json!([warning]), "the warning is mirrored whole");
    assert_eq!(row.errors.0, json!([]));

    // Then it fails: failed_to_set_on_device with an error (the warning is gone).
    let error = json!({
        "error_code": "failed_to_set_on_device",
        "message": "The lock rejected the code.",
        "is_access_code_error": true,
        "created_at": seam_time(Utc::now()),
    });
    let row = e2e
        .step(
            id,
            json!({ "warnings": [], "errors": [error] }),
            "access_code.failed_to_set_on_device",
            json!({ "access_code_errors": [error] }),
        )
        .await;
    assert_eq!(row.status.as_deref(), Some("setting"));
    assert_eq!(row.warnings.0, json!([]));
    assert_eq!(row.errors.0, json!([error]), "the error is mirrored whole");

    // Seam retries and the code is set: set_on_device.
    let row = e2e.step(id, json!({ "status": "set", "errors": [] }), "access_code.set_on_device", json!({})).await;
    assert_eq!(row.status.as_deref(), Some("set"));
    assert_eq!((row.warnings.0.clone(), row.errors.0.clone()), (json!([]), json!([])));
    assert_eq!(row.deleted_at, None);

    // Removed from the lock: the code is gone from Seam (404) → deleted_at.
    fake.delete_code(id).await;
    assert_eq!(fake.fake_get(id).await.0, 404);
    let row = e2e.step(id, Value::Null, "access_code.removed_from_device", json!({})).await;
    assert!(row.deleted_at.is_some(), "{row:?}");
    assert_eq!(row.status.as_deref(), Some("set"), "the last known status is kept");
    assert_eq!(row.name.as_deref(), Some("Front door"));

    // The history holds every step, in order.
    assert_eq!(
        e2e.history(id).await,
        vec![
            Step::new("created", None, Some("setting"), "access_code.created"),
            Step::new("changed", Some("setting"), Some("setting"), "access_code.delay_in_setting_on_device")
                .warnings(&["delay_in_setting_on_device"]),
            Step::new("changed", Some("setting"), Some("setting"), "access_code.failed_to_set_on_device")
                .errors(&["failed_to_set_on_device"]),
            Step::new("changed", Some("setting"), Some("set"), "access_code.set_on_device"),
            Step::new("deleted", Some("set"), Some("set"), "access_code.removed_from_device"),
        ]
    );

    // Every event is stored once, with the delivery that brought it; PINs redacted.
    let stored = e2e.stored_events(id).await;
    let types: Vec<&str> = stored.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "access_code.created",
            "access_code.delay_in_setting_on_device",
            "access_code.failed_to_set_on_device",
            "access_code.set_on_device",
            "access_code.removed_from_device",
        ]
    );
    assert!(stored.iter().all(|(_, delivery, _)| delivery.as_deref().is_some_and(|d| d.starts_with("msg_"))));
    let pins: Vec<Option<String>> =
        sqlx::query_scalar("SELECT payload->>'code' FROM seam_events WHERE access_code_id = $1 AND payload ? 'code'")
            .bind(id)
            .fetch_all(&e2e.db)
            .await
            .unwrap();
    assert_eq!(pins, [Some("[redacted]".to_owned())], "set_on_device carries the PIN; it is stored redacted");
    assert_eq!(e2e.queue_row(id).await, None, "nothing is left to fetch");

    e2e.finish().await;
}

#[sqlx::test]
async fn a_time_bound_code_is_mirrored_unset_until_it_starts(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;

    let starts_at = seam_time(Utc::now() + Duration::hours(1));
    let ends_at = seam_time(Utc::now() + Duration::hours(26));
    let (code, created) =
        fake.create_code(1, "Weekend guest", json!({ "starts_at": starts_at, "ends_at": ends_at })).await;
    let id = code["access_code_id"].as_str().unwrap();
    assert_eq!((code["type"].as_str(), code["status"].as_str()), (Some("time_bound"), Some("unset")));

    e2e.deliver(&created).await;
    let row = e2e.applied(id, &created).await;
    assert_eq!(row.kind.as_deref(), Some("time_bound"));
    assert_eq!(row.status.as_deref(), Some("unset"));
    assert_eq!(row.starts_at, Some(time(&json!(starts_at))));
    assert_eq!(row.ends_at, Some(time(&json!(ends_at))));
    assert_eq!(row.starts_at, Some(time(&code["starts_at"])), "as the fake answers it");

    // Preloaded on the lock before it starts: still `unset`, and no history entry
    // (nothing the mirror tracks changed).
    let row =
        e2e.step(id, json!({ "is_scheduled_on_device": true }), "access_code.scheduled_on_device", json!({})).await;
    assert_eq!(row.status.as_deref(), Some("unset"));
    assert_eq!(row.last_event_type.as_deref(), Some("access_code.scheduled_on_device"));

    // starts_at arrives: Seam reports it set.
    let row = e2e.step(id, json!({ "status": "set" }), "access_code.set_on_device", json!({})).await;
    assert_eq!(row.status.as_deref(), Some("set"));
    assert_eq!((row.starts_at, row.ends_at), (Some(time(&json!(starts_at))), Some(time(&json!(ends_at)))));

    // ends_at passes: Seam removes and deletes the code.
    fake.delete_code(id).await;
    let row = e2e.step(id, Value::Null, "access_code.removed_from_device", json!({})).await;
    assert!(row.deleted_at.is_some(), "an expired code is an ending: {row:?}");
    assert_eq!(e2e.queue_row(id).await, None, "a 404 is not retried");

    assert_eq!(
        e2e.history(id).await,
        vec![
            Step::new("created", None, Some("unset"), "access_code.created"),
            Step::new("changed", Some("unset"), Some("set"), "access_code.set_on_device"),
            Step::new("deleted", Some("set"), Some("set"), "access_code.removed_from_device"),
        ]
    );

    e2e.finish().await;
}
