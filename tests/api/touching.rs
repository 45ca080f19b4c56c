//! Every change that touches a code: device and account events re-fetch the codes
//! they affect, a late managed/unmanaged event cannot delete a live code, and the
//! history names what changed (name, time frame, PIN) and where it was seen.

use seam_access_sync::store::mirror::{self, Fetch, Observed, Origin};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::StandIn;

use crate::helpers::*;

fn code(id: &str, device: &str, managed: bool) -> Value {
    json!({
        "access_code_id": id,
        "device_id": device,
        "workspace_id": "ws_1",
        "name": "Guest",
        "code": "4821",
        "type": "ongoing",
        "status": "set",
        "warnings": [],
        "errors": [],
        "is_managed": managed,
        "created_at": "2026-11-25T09:00:00.000Z",
        "is_backup_access_code_available": true,
        "is_one_time_use": false,
        "is_offline_access_code": false,
        "pending_mutations": [{"mutation_code": "creating", "message": "m", "created_at": "2026-11-25T09:00:00.000Z"}]
    })
}

fn event(event_type: &str, ids: Value, occurred_at: &str) -> String {
    let mut event = json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": event_type,
        "workspace_id": "ws_1",
        "created_at": occurred_at,
        "occurred_at": occurred_at,
    });
    event.as_object_mut().unwrap().extend(ids.as_object().unwrap().clone());
    event.to_string()
}

/// Delivers `event_type` for each code (on its device, account `ca_1`) and drains.
async fn mirror_codes(app: &TestApp, pool: &PgPool, seam: &StandIn, codes: &[(&str, &str)]) {
    let (worker, _) = worker(pool, &seam.url(), "");
    for (i, (id, device)) in codes.iter().enumerate() {
        seam.set_code(id, code(id, device, true));
        let ids = json!({"access_code_id": id, "device_id": device, "connected_account_id": "ca_1"});
        app.deliver(&format!("seed_{i}"), &event("access_code.created", ids, "2026-11-25T10:00:00Z")).await;
    }
    worker.drain().await.unwrap();
}

async fn queued(pool: &PgPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT access_code_id, endpoint, last_event_type FROM access_code_refetches ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_device_event_queues_a_refetch_of_exactly_that_devices_live_codes(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    mirror_codes(&app, &pool, &seam, &[("ac_1", "lock_a"), ("ac_2", "lock_a"), ("ac_3", "lock_b"), ("ac_4", "lock_a")])
        .await;
    sqlx::query("UPDATE access_codes SET deleted_at = now() WHERE access_code_id = 'ac_4'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(queued(&pool).await.is_empty());

    let body = event(
        "device.disconnected",
        json!({"device_id": "lock_a", "connected_account_id": "ca_1"}),
        "2026-11-25T11:00:00Z",
    );
    assert_eq!(app.deliver("dev_1", &body).await.status(), 200);
    let action: String = sqlx::query_scalar("SELECT action FROM seam_events WHERE event_type = 'device.disconnected'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(action, "refetch_device");
    let expected = |id: &str| (id.to_owned(), "managed".to_owned(), Some("device.disconnected".to_owned()));
    assert_eq!(queued(&pool).await, vec![expected("ac_1"), expected("ac_2")], "lock_a's live codes only");

    // A redelivery changes nothing; the fetch that follows names the device event.
    assert_eq!(app.deliver("dev_1", &body).await.status(), 200);
    let requests: Vec<i64> =
        sqlx::query_scalar("SELECT requests FROM access_code_refetches").fetch_all(&pool).await.unwrap();
    assert_eq!(requests, vec![1, 1]);
    let mut offline = code("ac_1", "lock_a", true);
    offline["errors"] = json!([{"error_code": "device_offline", "message": "offline", "is_device_error": true}]);
    seam.set_code("ac_1", offline);
    let (worker, _) = worker(&pool, &seam.url(), "");
    worker.drain().await.unwrap();
    let (errors, event_type): (Value, Option<String>) =
        sqlx::query_as("SELECT errors, last_event_type FROM access_codes WHERE access_code_id = 'ac_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(errors[0]["error_code"], "device_offline");
    assert_eq!(event_type.as_deref(), Some("device.disconnected"));
    let changes: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(changes) FROM access_code_history WHERE access_code_id = 'ac_1' AND event_type = 'device.disconnected'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(changes, vec!["errors_changed"]);
}

#[sqlx::test]
async fn an_account_event_queues_the_codes_of_every_device_of_the_account(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    mirror_codes(&app, &pool, &seam, &[("ac_1", "lock_a"), ("ac_2", "lock_b")]).await;
    sqlx::query("UPDATE access_codes SET connected_account_id = 'ca_2' WHERE access_code_id = 'ac_2'")
        .execute(&pool)
        .await
        .unwrap();
    let body = event("connected_account.disconnected", json!({"connected_account_id": "ca_1"}), "2026-11-25T11:00:00Z");
    assert_eq!(app.deliver("acct_1", &body).await.status(), 200);
    let ids: Vec<String> = queued(&pool).await.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids, vec!["ac_1"]);

    // Events the service does not act on queue nothing; one missing its id is refused.
    let battery =
        event("device.low_battery", json!({"device_id": "lock_b", "battery_level": 0.1}), "2026-11-25T11:00:00Z");
    assert_eq!(app.deliver("bat_1", &battery).await.status(), 200);
    assert_eq!(queued(&pool).await.len(), 1);
    let no_device = event("device.disconnected", json!({}), "2026-11-25T11:00:00Z");
    let refused = app.deliver("bad_1", &no_device).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(count(&pool, "seam_events").await, 4, "two seeds, the account event, the battery event");
}

#[sqlx::test]
async fn the_mirror_keeps_seams_code_fields_as_columns(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    mirror_codes(&app, &pool, &seam, &[("ac_1", "lock_a")]).await;
    #[derive(sqlx::FromRow)]
    struct Columns {
        connected_account_id: Option<String>,
        seam_created_at: Option<chrono::DateTime<chrono::Utc>>,
        is_backup_access_code_available: Option<bool>,
        is_one_time_use: Option<bool>,
        is_backup: Option<bool>,
        pending_mutations: Value,
    }
    let row: Columns = sqlx::query_as(
        "SELECT connected_account_id, seam_created_at, is_backup_access_code_available, is_one_time_use,
                is_backup, pending_mutations
         FROM access_codes WHERE access_code_id = 'ac_1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.connected_account_id.as_deref(), Some("ca_1"));
    assert_eq!(row.seam_created_at.unwrap().to_rfc3339(), "2026-11-25T09:00:00+00:00");
    assert_eq!(
        (row.is_backup_access_code_available, row.is_one_time_use, row.is_backup),
        (Some(true), Some(false), None)
    );
    assert_eq!(row.pending_mutations[0]["mutation_code"], "creating");
}

/// The late-unmanaged-event sequence: converted to managed at 12:00, then an
/// `access_code.unmanaged.created` that occurred at 11:00 arrives.
#[sqlx::test]
async fn a_late_unmanaged_event_cannot_delete_a_code_converted_to_managed(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    seam.set_code("ac_1", code("ac_1", "lock_a", true));
    let ids = json!({"access_code_id": "ac_1", "device_id": "lock_a", "connected_account_id": "ca_1"});
    let converted = event("access_code.unmanaged.converted_to_managed", ids.clone(), "2026-11-25T12:00:00Z");
    let late = event("access_code.unmanaged.created", ids.clone(), "2026-11-25T11:00:00Z");

    // Order 1: the late event while the conversion's re-fetch is still queued.
    app.deliver("m1", &converted).await;
    app.deliver("m2", &late).await;
    assert_eq!(queued(&pool).await[0].1, "managed", "the older event does not switch the queued endpoint");
    worker.drain().await.unwrap();
    // Order 2: the late event after the mirror has stored the conversion.
    let late_again = event("access_code.unmanaged.removed", ids, "2026-11-25T11:30:00Z");
    app.deliver("m3", &late_again).await;
    assert_eq!(queued(&pool).await[0].1, "managed", "nor does it switch the endpoint the mirror knows");
    worker.drain().await.unwrap();

    let (deleted, managed): (bool, bool) =
        sqlx::query_as("SELECT deleted_at IS NOT NULL, is_managed FROM access_codes WHERE access_code_id = 'ac_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((deleted, managed), (false, true));
    let changes: Vec<String> =
        sqlx::query_scalar("SELECT change FROM access_code_history WHERE access_code_id = 'ac_1' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(changes, vec!["created"], "no deleted row");
    assert_eq!(seam.calls_to("/access_codes/unmanaged/get"), 0);
}

#[sqlx::test]
async fn a_404_is_confirmed_against_the_other_endpoint_before_a_code_is_deleted(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    // An unmanaged event (nothing newer known) names the unmanaged endpoint, but the
    // code is managed now: the 404 there is checked against the managed endpoint.
    seam.set_code("ac_1", code("ac_1", "lock_a", true));
    let ids = json!({"access_code_id": "ac_1", "device_id": "lock_a"});
    app.deliver("m1", &event("access_code.unmanaged.created", ids.clone(), "2026-11-25T11:00:00Z")).await;
    worker.drain().await.unwrap();
    let (deleted, managed): (bool, bool) =
        sqlx::query_as("SELECT deleted_at IS NOT NULL, is_managed FROM access_codes WHERE access_code_id = 'ac_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((deleted, managed), (false, true));
    assert_eq!((seam.calls_to("/access_codes/unmanaged/get"), seam.calls_to("/access_codes/get")), (1, 1));

    // The other way round: a managed event for a code that is unmanaged now.
    seam.set_code("ac_2", code("ac_2", "lock_a", false));
    let ids = json!({"access_code_id": "ac_2", "device_id": "lock_a"});
    app.deliver("m2", &event("access_code.set_on_device", ids, "2026-11-25T11:00:00Z")).await;
    worker.drain().await.unwrap();
    let managed: bool = sqlx::query_scalar("SELECT is_managed FROM access_codes WHERE access_code_id = 'ac_2'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!managed);

    // Gone from both: deleted, after one call to each.
    seam.reset_counts();
    let ids = json!({"access_code_id": "ac_3", "device_id": "lock_a"});
    app.deliver("m3", &event("access_code.deleted", ids, "2026-11-25T11:00:00Z")).await;
    worker.drain().await.unwrap();
    let deleted: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM access_codes WHERE access_code_id = 'ac_3'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(deleted);
    assert_eq!((seam.calls_to("/access_codes/get"), seam.calls_to("/access_codes/unmanaged/get")), (1, 1));
}

#[sqlx::test]
async fn a_change_of_name_time_frame_or_pin_makes_history_and_a_notify(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let seam = StandIn::start().await.unwrap();
    mirror_codes(&app, &pool, &seam, &[("ac_1", "lock_a")]).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen("access_code_changed").await.unwrap();
    let (worker, _) = worker(&pool, &seam.url(), "");
    let ids = json!({"access_code_id": "ac_1", "device_id": "lock_a"});
    let steps: [(&str, Value, &str); 3] = [
        ("access_code.name_changed", json!({"name": "Guest 2"}), "name_changed"),
        (
            "access_code.time_frame_changed",
            json!({"type": "time_bound", "starts_at": "2026-12-01T15:00:00Z", "ends_at": "2026-12-03T11:00:00Z"}),
            "time_frame_changed",
        ),
        // store_pins is off: the PIN is not kept, the event says it changed.
        ("access_code.code_changed", json!({"code": "9911"}), "code_changed"),
    ];
    let mut current = code("ac_1", "lock_a", true);
    for (i, (event_type, patch, expected)) in steps.iter().enumerate() {
        for (key, value) in patch.as_object().unwrap() {
            current[key] = value.clone();
        }
        seam.set_code("ac_1", current.clone());
        app.deliver(&format!("c{i}"), &event(event_type, ids.clone(), &format!("2026-11-25T12:0{i}:00Z"))).await;
        worker.drain().await.unwrap();
        let notification =
            tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        let payload: Value = serde_json::from_str(notification.payload()).unwrap();
        assert_eq!(payload["changes"], json!([expected]), "{event_type}");
        assert!(!notification.payload().contains("9911") && !notification.payload().contains("4821"));
    }
    let rows: Vec<(String, Vec<String>, String)> = sqlx::query_as(
        "SELECT change, changes, origin FROM access_code_history WHERE access_code_id = 'ac_1' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = |change: &str, changes: &[&str]| {
        (change.to_owned(), changes.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "fetch".to_owned())
    };
    assert_eq!(
        rows,
        vec![
            expected("created", &[]),
            expected("changed", &["name_changed"]),
            expected("changed", &["time_frame_changed"]),
            expected("changed", &["code_changed"]),
        ]
    );
    // The same state fetched again: nothing.
    let ids = json!({"access_code_id": "ac_1", "device_id": "lock_a"});
    app.deliver("again", &event("access_code.changed", ids, "2026-11-25T12:10:00Z")).await;
    worker.drain().await.unwrap();
    assert_eq!(count(&pool, "access_code_history").await, 4);
}

#[sqlx::test]
async fn with_pins_stored_a_pin_change_is_seen_by_comparing_pins(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *conn).await.unwrap();
    let fetch = |at: i64| Fetch {
        access_code_id: "ac_1",
        endpoint: seam_access_sync::seam::event::CodeEndpoint::Managed,
        device_id: None,
        workspace_id: None,
        connected_account_id: None,
        origin: Origin::Fetch,
        trigger: Default::default(),
        started_at: now + chrono::Duration::seconds(at),
    };
    let fetched = |pin: &str| {
        let mut raw = code("ac_1", "lock_a", true);
        raw["code"] = pin.into();
        seam_access_sync::seam::client::FetchedCode { code: serde_json::from_value(raw.clone()).unwrap(), raw }
    };
    for (at, pin) in [(0, "4821"), (1, "4821"), (2, "9911")] {
        mirror::apply(&mut conn, &fetch(at), Observed::Found(&fetched(pin)), true).await.unwrap();
    }
    let changes: Vec<Vec<String>> =
        sqlx::query_scalar("SELECT changes FROM access_code_history ORDER BY id").fetch_all(&mut *conn).await.unwrap();
    assert_eq!(changes, vec![vec![], vec!["code_changed".to_owned()]]);
}
