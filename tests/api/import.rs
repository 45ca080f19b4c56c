//! The import: every device's codes, read from Seam's lists into the mirror; resumable,
//! idempotent, paced, and converging on codes the lists no longer return.

use std::time::{Duration, Instant};

use seam_access_sync::jobs::import::{Report, RunOutcome};
use seam_access_sync::store::import::CodeCounts;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::{Mode, StandIn};

use crate::helpers::*;

/// A device as `/devices/list` returns it; `takes_codes`: `access_code` among its
/// capabilities.
fn device(id: &str, takes_codes: bool) -> Value {
    let capabilities = if takes_codes { json!(["access_code", "lock"]) } else { json!(["thermostat"]) };
    json!({
        "device_id": id, "connected_account_id": format!("ca_{id}"), "workspace_id": "ws_1",
        "device_type": "august_lock", "display_name": id, "capabilities_supported": capabilities,
        "properties": {}, "errors": [], "warnings": [], "created_at": "2026-11-01T00:00:00Z",
        "is_managed": true, "custom_metadata": {}, "space_ids": []
    })
}

/// An access code on `device`, managed or not, as Seam's lists return it.
fn code(id: &str, device: &str, managed: bool) -> Value {
    json!({
        "access_code_id": id, "device_id": device, "workspace_id": "ws_1", "name": id, "code": "4821",
        "type": "ongoing", "status": "set", "is_managed": managed,
        "errors": [], "warnings": [], "created_at": "2026-11-01T00:00:00Z"
    })
}

/// Seam with `devices` devices that take codes (`device_00`, …), each with `managed`
/// managed and `unmanaged` unmanaged codes.
async fn seam_with(devices: usize, managed: usize, unmanaged: usize) -> StandIn {
    let seam = StandIn::start().await.unwrap();
    seam.set_devices((0..devices).map(|d| device(&format!("device_{d:02}"), true)).collect());
    for d in 0..devices {
        let device_id = format!("device_{d:02}");
        for c in 0..managed {
            let id = format!("ac_{d:02}_{c:03}");
            seam.set_code(&id, code(&id, &device_id, true));
        }
        for c in 0..unmanaged {
            let id = format!("un_{d:02}_{c:03}");
            seam.set_code(&id, code(&id, &device_id, false));
        }
    }
    seam
}

fn completed(outcome: RunOutcome) -> Report {
    match outcome {
        RunOutcome::Completed(report) => report,
        other => panic!("the import did not run: {other:?}"),
    }
}

/// The device ids the access-code lists were asked for, in order.
fn code_list_devices(seam: &StandIn) -> Vec<String> {
    seam.list_requests()
        .into_iter()
        .filter(|(path, _)| path != "/devices/list")
        .map(|(_, body)| body["device_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn history(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT access_code_id, change, origin FROM access_code_history ORDER BY access_code_id, id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn an_import_pages_through_devices_and_codes_into_the_mirror(pool: PgPool) {
    let seam = seam_with(5, 3, 1).await;
    seam.set_page_size(Some(2));
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let report = completed(import.run_workspace(0).await.unwrap());

    assert_eq!(report.codes, CodeCounts { created: 20, ..CodeCounts::default() });
    assert_eq!((report.devices, report.resumed), (5, false));
    // 5 devices at 2 a page: 3 pages; 3 managed codes a device at 2 a page: 2 pages;
    // 1 unmanaged: 1 page.
    assert_eq!(seam.calls_to("/devices/list"), 3);
    assert_eq!(seam.calls_to("/access_codes/list"), 5 * 2);
    assert_eq!(seam.calls_to("/access_codes/unmanaged/list"), 5);
    assert_eq!(report.calls, 3 + 10 + 5);
    let cursors: Vec<Value> = seam.list_requests().iter().map(|(_, body)| body["page_cursor"].clone()).collect();
    assert_eq!(cursors[..3], [Value::Null, json!("after:device_01"), json!("after:device_03")]);
    assert!(seam.list_requests().iter().all(|(_, body)| body["limit"] == json!(500)), "import.page_limit asked");
    assert_eq!(seam.calls(), 0, "no code fetched one by one");

    type Row = (String, String, bool, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT access_code_id, device_id, is_managed, connected_account_id, code FROM access_codes ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0], ("ac_00_000".into(), "device_00".into(), true, Some("ca_device_00".into()), None));
    assert_eq!(rows.iter().filter(|r| !r.2).count(), 5, "unmanaged codes from their own list");
    assert!(rows.iter().all(|r| r.3.as_deref() == Some(&format!("ca_{}", r.1)[..])), "the device's account");
    let history = history(&pool).await;
    assert_eq!(history.len(), 20);
    assert!(history.iter().all(|(_, change, origin)| change == "created" && origin == "import"));
    let (finished, devices_done): (bool, i64) = sqlx::query_as(
        "SELECT finished_at IS NOT NULL, (SELECT count(*) FROM import_devices WHERE done_at IS NOT NULL)
         FROM import_runs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((finished, devices_done), (true, 5));
}

#[sqlx::test]
async fn devices_that_take_no_access_codes_are_skipped(pool: PgPool) {
    let seam = seam_with(2, 1, 0).await;
    let mut devices = vec![device("device_00", true), device("thermostat_1", false), device("device_01", true)];
    devices.push(json!({"device_id": "no_capabilities_field"}));
    seam.set_devices(devices);
    seam.set_code("ac_t", code("ac_t", "thermostat_1", true));
    let (import, _, metrics) = import_job(&pool, &seam.url(), "");
    let report = completed(import.run_workspace(0).await.unwrap());
    assert_eq!((report.devices, report.codes.created), (2, 2));
    assert_eq!(code_list_devices(&seam), ["device_00", "device_00", "device_01", "device_01"]);
    assert_eq!(count(&pool, "import_devices").await, 2);
    let skipped: i32 = sqlx::query_scalar("SELECT devices_skipped FROM import_runs").fetch_one(&pool).await.unwrap();
    assert_eq!(skipped, 2);
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT access_code_id FROM access_codes ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(ids, ["ac_00_000", "ac_01_000"]);
    let text = metrics.render(&seam_access_sync::store::admin::queue_status(&pool).await.unwrap(), None);
    assert!(text.contains(r#"seam_access_sync_import_codes_total{outcome="created"} 2"#), "{text}");
    assert!(text.contains("seam_access_sync_import_devices_total 2"), "{text}");
    assert!(text.contains(r#"seam_access_sync_import_runs_total{outcome="completed"} 1"#), "{text}");
    assert!(text.contains(r#"seam_access_sync_import_seam_calls_total{list="devices",outcome="ok"} 1"#), "{text}");
}

#[sqlx::test]
async fn a_crash_mid_import_resumes_without_listing_finished_devices_again(pool: PgPool) {
    // 5 devices at 2 a page (3 calls), each with 2 managed codes (1 call) and none
    // unmanaged (1 call).
    let seam = seam_with(5, 2, 0).await;
    seam.set_page_size(Some(2));
    // Devices listed, device_00 and device_01 done, device_02's managed list read:
    // its unmanaged list fails.
    seam.fail_lists_after(3 + 2 * 2 + 1, 503);
    let (import, _, metrics) = import_job(&pool, &seam.url(), "");
    let error = import.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("/access_codes/unmanaged/list for device device_02"), "{error:#}");
    assert_eq!(count(&pool, "access_codes").await, 4, "the two devices done, nothing of the third");
    let (last_error, done): (Option<String>, i64) = sqlx::query_as(
        "SELECT last_error, (SELECT count(*) FROM import_devices WHERE done_at IS NOT NULL)
         FROM import_runs WHERE finished_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(last_error.unwrap().contains("503"));
    assert_eq!(done, 2);

    seam.lists_recover();
    seam.reset_counts();
    let report = completed(import.run_workspace(0).await.unwrap());
    assert!(report.resumed);
    assert_eq!(seam.calls_to("/devices/list"), 0, "every device page was recorded");
    assert_eq!(
        code_list_devices(&seam),
        ["device_02", "device_02", "device_03", "device_03", "device_04", "device_04"]
    );
    assert_eq!((report.devices, report.codes.created, report.codes.unchanged), (3, 6, 0));
    assert_eq!(count(&pool, "access_codes").await, 10);
    assert_eq!(count(&pool, "access_code_history").await, 10, "each code created once");
    assert_eq!(count(&pool, "import_runs").await, 1, "the same run, finished");
    let text = metrics.render(&seam_access_sync::store::admin::queue_status(&pool).await.unwrap(), None);
    assert!(text.contains(r#"seam_access_sync_import_runs_total{outcome="failed"} 1"#), "{text}");
}

#[sqlx::test]
async fn the_device_pager_resumes_from_its_stored_cursor(pool: PgPool) {
    let seam = seam_with(5, 1, 0).await;
    seam.set_page_size(Some(2));
    seam.fail_lists_after(1, 500);
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    import.run_workspace(0).await.unwrap_err();
    let cursor: Option<String> =
        sqlx::query_scalar("SELECT device_cursor FROM import_runs").fetch_one(&pool).await.unwrap();
    assert_eq!(cursor.as_deref(), Some("after:device_01"));

    seam.lists_recover();
    seam.reset_counts();
    let report = completed(import.run_workspace(0).await.unwrap());
    let device_pages: Vec<Value> = seam
        .list_requests()
        .into_iter()
        .filter(|(path, _)| path == "/devices/list")
        .map(|(_, body)| body["page_cursor"].clone())
        .collect();
    assert_eq!(device_pages, [json!("after:device_01"), json!("after:device_03")], "not the first page again");
    assert_eq!(report.devices, 5);
    assert_eq!(count(&pool, "access_codes").await, 5);
}

#[sqlx::test]
async fn a_second_import_changes_nothing_and_writes_no_history(pool: PgPool) {
    let seam = seam_with(3, 2, 1).await;
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let first = completed(import.run_workspace(0).await.unwrap());
    assert_eq!(first.codes.created, 9);
    let mirror = |pool: PgPool| async move {
        type Row = (String, Option<String>, bool, Value, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT access_code_id, status, is_managed, access_code, device_id FROM access_codes ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let before = mirror(pool.clone()).await;
    let second = completed(import.run_workspace(0).await.unwrap());
    assert_eq!(second.codes, CodeCounts { unchanged: 9, ..CodeCounts::default() });
    assert!(!second.resumed, "a new run");
    assert_eq!(mirror(pool.clone()).await, before);
    assert_eq!(count(&pool, "access_code_history").await, 9, "no history written");
    assert_eq!(count(&pool, "access_code_refetches").await, 0, "nothing queued");
}

#[sqlx::test]
async fn codes_the_lists_no_longer_return_are_refetched_and_a_missed_deletion_converges(pool: PgPool) {
    let seam = seam_with(1, 2, 0).await;
    let mirrored = |id: &str, device: &str, fetched: &str| {
        format!(
            "INSERT INTO access_codes (access_code_id, device_id, status, fetched_at, is_managed)
             VALUES ('{id}', '{device}', 'set', {fetched}, true)"
        )
    };
    for statement in [
        // Deleted in Seam while no webhook reached the service.
        mirrored("ac_deleted", "device_00", "now() - interval '1 hour'"),
        // Fetched after the list began (a webhook's fetch, racing the import).
        mirrored("ac_just_fetched", "device_00", "now() + interval '1 hour'"),
        // On a device Seam no longer lists.
        mirrored("ac_on_removed_device", "device_removed", "now() - interval '1 hour'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&pool).await.unwrap();
    }
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let report = completed(import.run_workspace(0).await.unwrap());
    assert_eq!((report.queued_unlisted, report.queued_device_unlisted), (1, 1));
    let queued: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT access_code_id, device_id, connected_account_id FROM access_code_refetches ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        queued,
        [
            ("ac_deleted".into(), Some("device_00".into()), Some("ca_device_00".into())),
            ("ac_on_removed_device".into(), Some("device_removed".into()), None),
        ]
    );
    // The re-fetches find both gone (404 from both endpoints): the mirror converges.
    let (worker, _) = worker(&pool, &seam.url(), "");
    worker.drain().await.unwrap();
    let deleted: Vec<String> =
        sqlx::query_scalar("SELECT access_code_id FROM access_codes WHERE deleted_at IS NOT NULL ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(deleted, ["ac_deleted", "ac_on_removed_device"]);
}

#[sqlx::test]
async fn a_code_list_seam_refuses_for_a_device_is_left_out_and_nothing_is_concluded_from_it(pool: PgPool) {
    let seam = seam_with(2, 2, 1).await;
    seam.refuse_list("/access_codes/unmanaged/list", "device_00", 400);
    for (id, managed) in [("ac_old", true), ("un_old", false)] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO access_codes (access_code_id, device_id, status, fetched_at, is_managed)
             VALUES ('{id}', 'device_00', 'set', now() - interval '1 hour', {managed})"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let report = completed(import.run_workspace(0).await.unwrap());
    assert_eq!((report.devices, report.lists_refused, report.codes.created), (2, 1, 2 + 3));
    let queued: Vec<String> =
        sqlx::query_scalar("SELECT access_code_id FROM access_code_refetches").fetch_all(&pool).await.unwrap();
    assert_eq!(queued, ["ac_old"], "the unmanaged list was refused: its codes are not taken for deleted");
}

#[sqlx::test]
async fn a_listed_code_older_than_the_mirror_never_overwrites_a_newer_fetch(pool: PgPool) {
    let seam = seam_with(1, 1, 0).await;
    let mut listed = code("ac_00_000", "device_00", true);
    listed["status"] = json!("setting");
    seam.set_code("ac_00_000", listed);
    sqlx::query(
        "INSERT INTO access_codes (access_code_id, device_id, status, fetched_at)
         VALUES ('ac_00_000', 'device_00', 'set', now() + interval '1 minute')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let report = completed(import.run_workspace(0).await.unwrap());
    assert_eq!(report.codes, CodeCounts { stale: 1, ..CodeCounts::default() });
    let status: String = sqlx::query_scalar("SELECT status FROM access_codes").fetch_one(&pool).await.unwrap();
    assert_eq!(status, "set");
    assert_eq!(count(&pool, "access_code_history").await, 0);
}

#[sqlx::test]
async fn an_unreadable_listed_code_is_skipped_and_counted_without_its_pin(pool: PgPool) {
    test_kit::logs::capture("debug,sqlx=warn,hyper=warn,reqwest=warn");
    let seam = seam_with(1, 2, 0).await;
    let mut bad = code("ac_bad", "device_00", true);
    bad["code"] = json!(61829374);
    seam.set_code("ac_bad", bad);
    let (import, _, _) = import_job(&pool, &seam.url(), "");
    let report = completed(import.run_workspace(0).await.unwrap());
    assert_eq!(report.codes, CodeCounts { created: 2, skipped: 1, ..CodeCounts::default() });
    assert!(!captured_logs().contains("61829374"), "the PIN was logged");
    assert!(captured_logs().contains("ac_bad"), "the skipped code is named");
}

#[sqlx::test]
async fn a_rejected_key_fails_the_import_and_shows(pool: PgPool) {
    let seam = seam_with(1, 1, 0).await;
    seam.set_mode(Mode::Status(401));
    let (import, key_status, _) = import_job(&pool, &seam.url(), "");
    let error = import.run_workspace(0).await.unwrap_err();
    assert!(error.to_string().contains("API key"), "{error}");
    assert!(key_status.rejection().is_some());
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM import_runs").fetch_one(&pool).await.unwrap();
    assert!(last_error.unwrap().contains("401"));
    seam.set_mode(Mode::Normal);
    completed(import.run_workspace(0).await.unwrap());
    assert!(key_status.rejection().is_none(), "accepted again");
}

#[sqlx::test]
async fn two_imports_at_once_run_one(pool: PgPool) {
    let seam = seam_with(2, 1, 0).await;
    seam.set_mode(Mode::Slow(Duration::from_millis(300)));
    let (a, _, _) = import_job(&pool, &seam.url(), "");
    let (b, _, _) = import_job(&pool, &seam.url(), "");
    let (a, b) = tokio::join!(a.run_workspace(0), b.run_workspace(0));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, RunOutcome::Skipped)).count(), 1, "{outcomes:?}");
    assert_eq!(seam.calls_to("/devices/list"), 1);
}

#[sqlx::test]
async fn the_import_keeps_to_the_shared_pace(pool: PgPool) {
    // 1 device page + 2 lists for each of 10 devices: 21 calls; at 5 a second (a burst
    // of 5, then one every 200 ms) about 3.2 s, unpaced a few milliseconds.
    let seam = seam_with(10, 1, 0).await;
    let (import, _, _) = import_job(&pool, &seam.url(), "[worker]\nmax_requests_per_second = 5");
    let started = Instant::now();
    let run = tokio::spawn(async move { import.run_workspace(0).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let calls = seam.calls_to("/devices/list")
        + seam.calls_to("/access_codes/list")
        + seam.calls_to("/access_codes/unmanaged/list");
    let elapsed = started.elapsed();
    // The burst plus one call per 200 ms of the time that passed, and one for slack.
    let allowed = 5 + (elapsed.as_millis() / 200) as u64 + 1;
    assert!((5..=allowed).contains(&calls), "{calls} calls after {elapsed:?}, at most {allowed} allowed");
    let report = completed(run.await.unwrap().unwrap());
    assert_eq!(report.calls, 21);
}

/// Calls an import makes for `devices` devices of `codes_per_device` managed codes
/// each, with Seam's default page sizes (the stand-in's when `limit` asks more).
async fn measure(pool: &PgPool, devices: usize, codes_per_device: usize) -> (u64, Duration) {
    let seam = seam_with(devices, codes_per_device, 0).await;
    let (import, _, _) = import_job(pool, &seam.url(), "");
    let started = Instant::now();
    let report = completed(import.run_workspace(0).await.unwrap());
    let elapsed = started.elapsed();
    assert_eq!(report.codes.created as usize, devices * codes_per_device);
    let calls = seam.calls_to("/devices/list")
        + seam.calls_to("/access_codes/list")
        + seam.calls_to("/access_codes/unmanaged/list");
    assert_eq!(u64::from(report.calls), calls);
    eprintln!(
        "import of {} codes on {devices} devices: {calls} Seam calls ({} /devices/list, {} /access_codes/list, \
         {} /access_codes/unmanaged/list) in {elapsed:.1?} unpaced (debug build, local stand-in)",
        devices * codes_per_device,
        seam.calls_to("/devices/list"),
        seam.calls_to("/access_codes/list"),
        seam.calls_to("/access_codes/unmanaged/list"),
    );
    (calls, elapsed)
}

#[sqlx::test]
async fn an_import_of_1000_codes_on_100_devices_makes_201_calls(pool: PgPool) {
    let (calls, _) = measure(&pool, 100, 10).await;
    assert_eq!(calls, 1 + 100 * 2, "a device page, then two lists a device");
}

/// `cargo test --test api import_of_10000 -- --ignored --nocapture`
#[sqlx::test]
#[ignore = "a measurement: about half a minute in a debug build"]
async fn an_import_of_10000_codes_on_1000_devices_makes_2002_calls(pool: PgPool) {
    let (calls, _) = measure(&pool, 1000, 10).await;
    assert_eq!(calls, 2 + 1000 * 2, "two device pages of 500, then two lists a device");
}

/// The app with the import on start, on a pool of its own (stopping it closes it).
async fn start_worker(pool: &PgPool, seam: &StandIn) -> TestApp {
    let own = sqlx::postgres::PgPoolOptions::new().connect_with((*pool.connect_options()).clone()).await.unwrap();
    let extra = "[server]\nrun_mode = \"all\"\n[import]\non_start = true";
    spawn_app_with(own, settings(&seam.url(), extra)).await
}

#[sqlx::test]
async fn the_worker_imports_on_start_once_and_resumes_a_run_cut_short(pool: PgPool) {
    let seam = seam_with(3, 2, 0).await;
    let app = start_worker(&pool, &seam).await;
    let db = pool.clone();
    eventually("the import finished on start", || {
        let db = db.clone();
        async move {
            let finished: Option<bool> = sqlx::query_scalar("SELECT finished_at IS NOT NULL FROM import_runs")
                .fetch_optional(&db)
                .await
                .unwrap();
            if finished == Some(true) { Ok(()) } else { Err(format!("finished: {finished:?}")) }
        }
    })
    .await;
    app.stop().await;
    assert_eq!(count(&pool, "access_codes").await, 6);

    // A finished import and a mirror with codes: nothing to do on the next start.
    seam.reset_counts();
    let app = start_worker(&pool, &seam).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.stop().await;
    assert_eq!(seam.calls_to("/devices/list"), 0);

    // A run cut short is resumed on start.
    sqlx::query("INSERT INTO import_runs DEFAULT VALUES").execute(&pool).await.unwrap();
    let app = start_worker(&pool, &seam).await;
    let db = pool.clone();
    eventually("the run cut short finished", || {
        let db = db.clone();
        async move {
            let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM import_runs WHERE finished_at IS NULL")
                .fetch_one(&db)
                .await
                .unwrap();
            if unfinished == 0 { Ok(()) } else { Err(format!("{unfinished} unfinished")) }
        }
    })
    .await;
    app.stop().await;
    assert_eq!(seam.calls_to("/devices/list"), 1);
    assert_eq!(count(&pool, "access_code_history").await, 6, "nothing changed: no history");
}

/// Runs the real binary against the test's database and `seam`.
fn cli(pool: &PgPool, seam: &StandIn, args: &[&str]) -> std::process::Output {
    let url = test_kit::database_url(&pool.connect_options());
    std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("SEAM_API_URL", seam.url())
        .env("SEAM_API_KEY", API_KEY)
        .env("APP_LOG__FORMAT", "text")
        .env_remove("SEAM_WEBHOOK_SECRET")
        .output()
        .expect("the binary runs")
}

#[sqlx::test]
async fn the_cli_imports_in_the_foreground_and_status_shows_it(pool: PgPool) {
    let seam = seam_with(2, 2, 1).await;
    let status = cli(&pool, &seam, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("import              never ran"), "{status:?}");

    let output = cli(&pool, &seam, &["import"]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("listed 2 device(s) that take access codes"), "{printed}");
    assert!(printed.contains("device 2/2 device_01: 3 code(s) (3 created"), "{printed}");
    assert!(printed.contains("import finished (run 1): 2 device(s), 6 code(s): 6 created"), "{printed}");

    let status = cli(&pool, &seam, &["status"]);
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(
        printed.contains("run 1 finished") && printed.contains("2/2 device(s) done, 6 code(s) imported"),
        "{printed}"
    );
    let json: Value = serde_json::from_slice(&cli(&pool, &seam, &["status", "--json"]).stdout).unwrap();
    assert_eq!(json["workspaces"][0]["import"]["state"], "finished");
    assert_eq!(
        (
            json["workspaces"][0]["import"]["devices_done"].as_i64(),
            json["workspaces"][0]["import"]["codes_imported"].as_i64()
        ),
        (Some(2), Some(6))
    );

    // reconcile --all --import: the import first (a new run, nothing changed), then
    // every code queued.
    let output = cli(&pool, &seam, &["reconcile", "--all", "--import", "--rate", "100"]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("import finished (run 2): 2 device(s), 6 code(s): 0 created, 0 changed, 6 unchanged"),
        "{printed}"
    );
    assert_eq!(count(&pool, "access_code_refetches").await, 6);
}
