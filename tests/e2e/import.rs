//! A new deployment starts full: codes that existed in Seam before the service was
//! registered are imported from the device lists, with no webhook at all.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually_within;

use crate::rig::{E2e, Harness};

#[sqlx::test]
async fn codes_made_before_the_service_started_are_all_mirrored_within_a_minute(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let fake = Harness::start().await;
    let mut expected: Vec<(String, bool)> = Vec::new();
    for (device, name) in [(0, "Front door"), (0, "Cleaner"), (1, "Back door"), (2, "Garage")] {
        let (code, _) = fake.create_code(device, name, json!({})).await;
        expected.push((code["access_code_id"].as_str().unwrap().to_owned(), true));
    }
    for (device, name) in [(1, "Keypad code set at the lock"), (2, "Old owner's code")] {
        let code = fake.create_unmanaged_code(device, name).await;
        expected.push((code["access_code_id"].as_str().unwrap().to_owned(), false));
    }
    expected.sort();

    // No webhook is ever sent, and catch-up is off: only the import can find them.
    let e2e =
        E2e::start_on(fake, database, &[("APP_IMPORT__ON_START", "true"), ("APP_CATCH_UP__INTERVAL_SECONDS", "0")])
            .await;
    let mirrored = eventually_within(Duration::from_secs(60), "every code in the mirror", || async {
        let rows: Vec<(String, bool)> =
            sqlx::query_as("SELECT access_code_id, is_managed FROM access_codes WHERE deleted_at IS NULL ORDER BY 1")
                .fetch_all(&e2e.db)
                .await
                .unwrap();
        if rows.len() == expected.len() { Ok(rows) } else { Err(format!("{rows:?}")) }
    })
    .await;
    assert_eq!(mirrored, expected);

    let origins: Vec<(String, String)> =
        sqlx::query_as("SELECT change, origin FROM access_code_history ORDER BY id").fetch_all(&e2e.db).await.unwrap();
    assert_eq!(origins, vec![("created".to_owned(), "import".to_owned()); expected.len()]);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM seam_events").fetch_one(&e2e.db).await.unwrap();
    assert_eq!(events, 0, "no webhook, no catch-up");
    let finished: i64 = sqlx::query_scalar("SELECT count(*) FROM import_runs WHERE finished_at IS NOT NULL")
        .fetch_one(&e2e.db)
        .await
        .unwrap();
    assert_eq!(finished, 1);

    // The calls it made, as the harness's contract check saw them (and found lawful).
    let report = e2e.harness.contract_report().await;
    let calls = |route: &str| report["by_route"][route]["requests"].as_u64().unwrap_or(0);
    assert_eq!(calls("POST /devices/list"), 1, "{report}");
    assert_eq!(calls("POST /access_codes/list"), 3, "one per lock: {report}");
    assert_eq!(calls("POST /access_codes/unmanaged/list"), 3, "{report}");
    assert_eq!(report["violation_count"], Value::from(0));
    e2e.finish().await;
}
