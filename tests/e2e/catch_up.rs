//! What no webhook brings: events read back from Seam's event log, and codes the
//! sweep re-fetches by itself.

use chrono::{Duration, Utc};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually;

use crate::rig::{E2e, seam_time, time};

#[sqlx::test]
async fn events_whose_webhooks_were_lost_are_caught_up_from_seams_event_log(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let e2e = E2e::start(database).await;
    let fake = &e2e.harness;
    let (a, a_created) = fake.create_code(0, "Delivered as usual", json!({})).await;
    let a_id = a["access_code_id"].as_str().unwrap().to_owned();
    e2e.deliver(&a_created).await;
    e2e.applied(&a_id, &a_created).await;

    // These happen in Seam, but their webhooks never arrive (the endpoint was down
    // past Svix's retries, or the secret was wrong): they are only in Seam's event log.
    let (b, b_created) = fake.create_code(1, "Webhooks lost", json!({})).await;
    let b_id = b["access_code_id"].as_str().unwrap().to_owned();
    fake.set_state(&b_id, json!({ "status": "set" })).await;
    let b_set = fake.event("access_code.set_on_device", &b_id, json!({})).await;
    // As Seam documents a warning: with the time it was raised.
    let warning = json!({ "warning_code": "delay_in_setting_on_device", "message": "slow lock", "created_at": seam_time(Utc::now()) });
    fake.set_state(&a_id, json!({ "warnings": [warning] })).await;
    let a_delay =
        fake.event("access_code.delay_in_setting_on_device", &a_id, json!({ "access_code_warnings": [warning] })).await;

    // The service reads /events/list when it starts (and every catch_up.interval_seconds).
    let key = fake.info.api_key.clone();
    let e2e = e2e.restart_with_key(&key).await;
    let row = e2e.applied(&b_id, &b_set).await;
    assert_eq!((row.name.as_deref(), row.status.as_deref()), (Some("Webhooks lost"), Some("set")));
    let row = e2e.applied(&a_id, &a_delay).await;
    assert_eq!(row.warnings.0, json!([warning]));

    // Stored once each; the ones from the log have no delivery id.
    let id = |event: &serde_json::Value| event["event_id"].as_str().unwrap().to_owned();
    let stored = e2e.stored_events(&b_id).await;
    assert_eq!(
        stored,
        [
            (id(&b_created), None, "access_code.created".to_owned()),
            (id(&b_set), None, "access_code.set_on_device".to_owned())
        ]
    );
    let stored = e2e.stored_events(&a_id).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[0].1.is_some(), "the created event came by webhook: {stored:?}");
    assert_eq!((stored[1].0.clone(), stored[1].1.clone()), (id(&a_delay), None));

    // A webhook that does arrive late is a duplicate, not a second event.
    let late = e2e.harness.deliver(&e2e.service.webhook(), &b_set).await;
    assert_eq!((late.status, late.body["status"].as_str()), (200, Some("duplicate")), "{late:?}");
    assert_eq!(e2e.stored_events(&b_id).await.len(), 2);

    e2e.finish().await;
}

#[sqlx::test]
async fn the_sweep_re_fetches_a_time_bound_code_once_it_starts_even_without_an_event(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let grace = 1;
    let grace_seconds = grace.to_string();
    let sweep = [("APP_SWEEP__INTERVAL_SECONDS", "1"), ("APP_SWEEP__TIME_BOUND_GRACE_SECONDS", grace_seconds.as_str())];
    let e2e = E2e::start_with(database, &sweep).await;
    let fake = &e2e.harness;
    let starts_at = seam_time(Utc::now() + Duration::seconds(3));
    let ends_at = seam_time(Utc::now() + Duration::hours(2));
    let (code, created) =
        fake.create_code(2, "Starts soon", json!({ "starts_at": starts_at, "ends_at": ends_at })).await;
    let id = code["access_code_id"].as_str().unwrap();
    e2e.deliver(&created).await;
    assert_eq!(e2e.applied(id, &created).await.status.as_deref(), Some("unset"));

    // Seam sets the code at starts_at; say its event is lost. (The fake has no clock:
    // set it now. The mirror must still not fetch it before starts_at + grace.)
    fake.set_state(id, json!({ "status": "set" })).await;
    let due = time(&json!(starts_at)) + Duration::seconds(grace);
    let row = eventually("the sweep to re-fetch the code after starts_at", || async {
        match e2e.mirror(id).await {
            Some(row) if row.status.as_deref() == Some("set") => Ok(row),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(row.fetched_at >= due, "fetched at {} before starts_at + grace ({due})", row.fetched_at);
    let history = e2e.history(id).await;
    let statuses: Vec<_> = history.iter().map(|s| (s.change.as_str(), s.status.as_deref())).collect();
    assert_eq!(statuses, [("created", Some("unset")), ("changed", Some("set"))], "{history:?}");

    e2e.finish().await;
}
