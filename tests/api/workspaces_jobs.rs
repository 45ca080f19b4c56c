//! Many workspaces, background jobs: catch-up and the import run per workspace, each
//! with its own credential, state and lock; one workspace's failure is its own; the
//! single-key setup's state from before workspaces is kept.

use chrono::{DateTime, DurationRound, Utc};
use seam_access_sync::config::Settings;
use seam_access_sync::jobs::catch_up::RunOutcome;
use seam_access_sync::jobs::import::RunOutcome as ImportOutcome;
use seam_access_sync::seam::workspaces::Workspaces;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::StandIn;

use crate::helpers::*;
use crate::operations::stdout;

/// Workspaces A ("Harbour View", `ws_a`, `seam_key_a`) and B ("Pine Lodge", `ws_b`,
/// `seam_key_b`), no `SEAM_API_KEY`.
const TWO_WORKSPACES: &str = r#"
    [seam]
    api_key = ""
    [[workspaces]]
    name = "Harbour View"
    workspace_id = "ws_a"
    api_key = "seam_key_a"
    [[workspaces]]
    name = "Pine Lodge"
    workspace_id = "ws_b"
    api_key = "seam_key_b"
"#;

fn two_workspaces(seam_url: &str, extra: &str) -> Settings {
    settings_with(seam_url, &[TWO_WORKSPACES, extra])
}

fn workspaces_of(settings: &Settings) -> Workspaces {
    Workspaces::new(&settings.workspace_entries().unwrap(), &settings.seam, 0).unwrap()
}

/// A stand-in where each key reaches its workspace (and lists only its items).
async fn seam_of_two() -> StandIn {
    let seam = StandIn::start().await.unwrap();
    seam.set_workspace("seam_key_a", "ws_a");
    seam.set_workspace("seam_key_b", "ws_b");
    seam.answer_unknown_codes(fixtures::access_code);
    seam
}

fn logged_event(workspace_id: &str, access_code_id: &str, minutes_ago: i64) -> Value {
    let at = (Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut event = access_code_event("access_code.changed", access_code_id, &at);
    event["created_at"] = json!(at);
    event["workspace_id"] = json!(workspace_id);
    event
}

type StateRow = (String, Option<DateTime<Utc>>, Option<String>, Option<String>);

async fn catch_up_states(pool: &PgPool) -> Vec<StateRow> {
    sqlx::query_as("SELECT workspace_key, high_water_mark, last_outcome, last_error FROM catch_up_state ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn catch_up_reads_each_workspaces_log_with_its_own_key_and_keeps_its_own_mark(pool: PgPool) {
    let seam = seam_of_two().await;
    seam.set_events(vec![
        logged_event("ws_a", "ac_a1", 30),
        logged_event("ws_a", "ac_a2", 20),
        logged_event("ws_b", "ac_b1", 10),
    ]);
    let settings = two_workspaces(&seam.url(), "");
    let catch_up = catch_up_of(&pool, &settings, workspaces_of(&settings));

    let runs = catch_up.run_all().await;
    let outcomes: Vec<(String, usize, usize)> = runs
        .into_iter()
        .map(|run| match run.result {
            Some(Ok(RunOutcome::Completed { found, new, .. })) => (run.key, found, new),
            other => panic!("{}: {other:?}", run.label),
        })
        .collect();
    assert_eq!(outcomes, [("ws_a".to_owned(), 2, 2), ("ws_b".to_owned(), 1, 1)], "each reads its own log only");
    assert_eq!(seam.credentials_used("/events/list"), ["seam_key_a", "seam_key_b"]);
    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT access_code_id, workspace_id FROM seam_events ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            ("ac_a1".into(), Some("ws_a".into())),
            ("ac_a2".into(), Some("ws_a".into())),
            ("ac_b1".into(), Some("ws_b".into()))
        ]
    );
    let states = catch_up_states(&pool).await;
    let keys: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(keys, ["ws_a", "ws_b"], "the state from before workspaces went to the first one");
    assert!(states.iter().all(|s| s.1.is_some() && s.2.as_deref() == Some("completed")), "{states:?}");

    // B's next run starts at B's mark, A's at A's.
    let marks: Vec<DateTime<Utc>> = states.iter().map(|s| s.1.unwrap()).collect();
    catch_up.run_all().await;
    let requests = seam.event_log_requests();
    let from = |i: usize| requests[i]["between"][0].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let overlap = chrono::Duration::seconds(300) + chrono::Duration::milliseconds(1);
    assert_eq!((from(2), from(3)), (marks[0] - overlap, marks[1] - overlap));
}

#[sqlx::test]
async fn a_revoked_key_fails_its_own_workspaces_catch_up_and_the_other_goes_on(pool: PgPool) {
    let seam = seam_of_two().await;
    seam.set_events(vec![logged_event("ws_a", "ac_a1", 20), logged_event("ws_b", "ac_b1", 10)]);
    seam.revoke("seam_key_a");
    let settings = two_workspaces(&seam.url(), "");
    let workspaces = workspaces_of(&settings);
    let catch_up = catch_up_of(&pool, &settings, workspaces.clone());

    let runs = catch_up.run_all().await;
    let error = match &runs[0].result {
        Some(Err(e)) => format!("{e:#}"),
        other => panic!("A's run: {other:?}"),
    };
    assert!(error.contains("401"), "{error}");
    assert!(matches!(runs[1].result, Some(Ok(RunOutcome::Completed { new: 1, .. }))), "{runs:?}");
    let states = catch_up_states(&pool).await;
    assert_eq!((states[0].0.as_str(), states[0].1, states[0].2.as_deref()), ("ws_a", None, Some("failed")));
    assert!(states[0].3.as_deref().unwrap().contains("401"), "A's state says why: {states:?}");
    assert_eq!((states[1].2.as_deref(), states[1].3.as_deref()), (Some("completed"), None));
    let key_states = workspaces.key_states();
    assert!(key_states[0].2.as_deref().unwrap().contains("401") && key_states[1].2.is_none(), "{key_states:?}");

    // B keeps running and its mark moves; A stays failed.
    let b_mark = states[1].1.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let runs = catch_up.run_all().await;
    assert!(runs[0].result.as_ref().unwrap().is_err() && runs[1].result.as_ref().unwrap().is_ok());
    let states = catch_up_states(&pool).await;
    assert!(states[1].1.unwrap() > b_mark, "B's mark moved: {states:?}");

    // `status` shows each workspace, and why A's catch-up fails.
    let text = stdout(&crate::operations::cli(&pool, &["status"]));
    assert!(text.contains("workspace           Harbour View (ws_a)"), "{text}");
    assert!(text.contains("workspace           Pine Lodge (ws_b)"), "{text}");
    let a = &text[text.find("(ws_a)").unwrap()..text.find("(ws_b)").unwrap()];
    assert!(
        a.contains("catch-up            last run")
            && a.contains(" failed: ")
            && a.contains("caught up           never"),
        "{a}"
    );
    assert!(a.contains("catch-up error") && a.contains("401"), "{a}");
    let b = &text[text.find("(ws_b)").unwrap()..];
    assert!(b.contains(" completed: ") && !b.contains("catch-up error"), "{b}");
    let json: Value = serde_json::from_str(&stdout(&crate::operations::cli(&pool, &["status", "--json"]))).unwrap();
    let workspaces = json["workspaces"].as_array().unwrap();
    assert_eq!(
        workspaces
            .iter()
            .map(|w| (w["workspace_id"].clone(), w["catch_up"]["last_outcome"].clone()))
            .collect::<Vec<_>>(),
        [(json!("ws_a"), json!("failed")), (json!("ws_b"), json!("completed"))]
    );
    assert_eq!(workspaces[0]["label"], "Harbour View");
}

#[sqlx::test]
async fn a_workspace_not_known_yet_is_skipped_until_it_is(pool: PgPool) {
    let seam = StandIn::start().await.unwrap();
    seam.set_events(vec![logged_event("ws_a", "ac_a1", 20), logged_event("ws_b", "ac_b1", 10)]);
    seam.set_workspace("seam_key_b", "ws_b");
    // A's id is not configured, and Seam does not say yet.
    let toml = TWO_WORKSPACES.replace("workspace_id = \"ws_a\"\n", "");
    let settings = settings_with(&seam.url(), &[&toml]);
    let workspaces = workspaces_of(&settings);
    let catch_up = catch_up_of(&pool, &settings, workspaces.clone());
    let runs = catch_up.run_all().await;
    assert_eq!(runs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["ws_b"], "{runs:?}");
    assert_eq!(seam.credentials_used("/events/list"), ["seam_key_b"]);

    seam.set_workspace("seam_key_a", "ws_a");
    workspaces.resolve().await;
    let runs = catch_up.run_all().await;
    assert_eq!(runs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["ws_a", "ws_b"], "{runs:?}");
    assert_eq!(count(&pool, "seam_events").await, 2);
}

#[sqlx::test]
async fn an_upgraded_single_key_deployment_keeps_its_catch_up_mark(pool: PgPool) {
    // The state the single catch-up left before workspaces (the migration keys it '').
    let mark = Utc::now() - chrono::Duration::hours(2);
    sqlx::query("UPDATE catch_up_state SET high_water_mark = $1, last_outcome = 'completed' WHERE workspace_key = ''")
        .bind(mark)
        .execute(&pool)
        .await
        .unwrap();
    let seam = StandIn::start().await.unwrap();
    seam.set_events(vec![logged_event("ws_1", "ac_1", 10)]);
    let settings = settings(&seam.url(), "");
    let workspaces = workspaces_of(&settings);

    // Workspace not known yet: its state is the '' row.
    let catch_up = catch_up_of(&pool, &settings, workspaces.clone());
    catch_up.run_workspace(0).await.unwrap();
    let from = |request: &Value| request["between"][0].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let overlap = chrono::Duration::seconds(300) + chrono::Duration::milliseconds(1);
    assert_eq!(
        from(&seam.event_log_requests()[0]),
        mark.duration_trunc(chrono::Duration::milliseconds(1)).unwrap() - overlap,
        "from the kept mark"
    );
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT workspace_key FROM catch_up_state").fetch_all(&pool).await.unwrap();
    assert_eq!(keys, [""]);

    // Seam says which workspace the key reaches: the row becomes that workspace's,
    // mark and all.
    seam.set_workspace(API_KEY, "ws_1");
    workspaces.resolve().await;
    let (_, kept_mark, _, _) = catch_up_states(&pool).await.remove(0);
    let outcome = catch_up.run_workspace(0).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { new: 0, .. }), "{outcome:?}");
    assert_eq!(from(&seam.event_log_requests()[1]), kept_mark.unwrap() - overlap);
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT workspace_key FROM catch_up_state").fetch_all(&pool).await.unwrap();
    assert_eq!(keys, ["ws_1"]);
}

/// A device of `workspace_id` that takes access codes.
fn device(workspace_id: &str, id: &str) -> Value {
    json!({
        "device_id": id, "connected_account_id": format!("ca_{id}"), "workspace_id": workspace_id,
        "device_type": "august_lock", "display_name": id, "capabilities_supported": ["access_code", "lock"],
        "properties": {}, "errors": [], "warnings": [], "created_at": "2026-11-01T00:00:00Z",
        "is_managed": true, "custom_metadata": {}, "space_ids": []
    })
}

fn code(workspace_id: &str, id: &str, device: &str) -> Value {
    json!({
        "access_code_id": id, "device_id": device, "workspace_id": workspace_id, "name": id, "code": "4821",
        "type": "ongoing", "status": "set", "is_managed": true,
        "errors": [], "warnings": [], "created_at": "2026-11-01T00:00:00Z"
    })
}

/// A: two devices with a code each; B: one device with two codes.
async fn seam_with_devices() -> StandIn {
    let seam = seam_of_two().await;
    seam.set_devices(vec![device("ws_a", "dev_a1"), device("ws_a", "dev_a2"), device("ws_b", "dev_b1")]);
    for (ws, id, dev) in [
        ("ws_a", "ac_a1", "dev_a1"),
        ("ws_a", "ac_a2", "dev_a2"),
        ("ws_b", "ac_b1", "dev_b1"),
        ("ws_b", "ac_b2", "dev_b1"),
    ] {
        seam.set_code(id, code(ws, id, dev));
    }
    seam
}

/// A code mirrored earlier on a device Seam no longer lists.
async fn mirrored_on_a_removed_device(pool: &PgPool, workspace_id: &str, id: &str) {
    sqlx::query(
        "INSERT INTO access_codes (access_code_id, device_id, workspace_id, status, fetched_at, is_managed)
         VALUES ($1, 'dev_removed', $2, 'set', now() - interval '1 hour', true)",
    )
    .bind(id)
    .bind(workspace_id)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn the_import_lists_each_workspaces_devices_with_its_own_key(pool: PgPool) {
    let seam = seam_with_devices().await;
    mirrored_on_a_removed_device(&pool, "ws_b", "ac_b_old").await;
    let settings = two_workspaces(&seam.url(), "");
    let (import, _) = import_of(&pool, &settings, workspaces_of(&settings));

    let ImportOutcome::Completed(a) = import.run_workspace(0).await.unwrap() else { panic!("A imported") };
    assert_eq!((a.devices, a.codes.created, a.queued_device_unlisted), (2, 2, 0), "B's old code is not A's to doubt");
    assert_eq!(count(&pool, "access_code_refetches").await, 0);
    let ImportOutcome::Completed(b) = import.run_workspace(1).await.unwrap() else { panic!("B imported") };
    assert_eq!((b.devices, b.codes.created, b.queued_device_unlisted), (1, 2, 1));

    assert_eq!(seam.credentials_used("/devices/list"), ["seam_key_a", "seam_key_b"]);
    assert_eq!(seam.credentials_used("/access_codes/list"), ["seam_key_a", "seam_key_a", "seam_key_b"]);
    let mirrored: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT access_code_id, workspace_id FROM access_codes WHERE access_code_id <> 'ac_b_old' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        mirrored,
        [
            ("ac_a1".into(), Some("ws_a".into())),
            ("ac_a2".into(), Some("ws_a".into())),
            ("ac_b1".into(), Some("ws_b".into())),
            ("ac_b2".into(), Some("ws_b".into())),
        ]
    );
    let runs: Vec<(String, Option<String>, bool)> =
        sqlx::query_as("SELECT workspace_key, workspace_label, finished_at IS NOT NULL FROM import_runs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        runs,
        [("ws_a".into(), Some("Harbour View".into()), true), ("ws_b".into(), Some("Pine Lodge".into()), true)]
    );
}

#[sqlx::test]
async fn a_revoked_key_fails_its_own_workspaces_import_only(pool: PgPool) {
    let seam = seam_with_devices().await;
    seam.revoke("seam_key_a");
    let settings = two_workspaces(&seam.url(), "");
    let (import, _) = import_of(&pool, &settings, workspaces_of(&settings));
    let error = import.run_workspace(0).await.unwrap_err();
    assert!(format!("{error:#}").contains("401"), "{error:#}");
    assert!(matches!(import.run_workspace(1).await.unwrap(), ImportOutcome::Completed(_)));
    let runs: Vec<(String, bool, Option<String>)> =
        sqlx::query_as("SELECT workspace_key, finished_at IS NOT NULL, last_error FROM import_runs ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!((runs[0].0.as_str(), runs[0].1), ("ws_a", false));
    assert!(runs[0].2.as_deref().unwrap().contains("401"));
    assert_eq!((runs[1].0.as_str(), runs[1].1, runs[1].2.as_deref()), ("ws_b", true, None));
}

#[sqlx::test]
async fn the_import_on_start_imports_each_workspace_whose_mirror_has_none_of_its_codes(pool: PgPool) {
    let seam = seam_with_devices().await;
    // A's mirror has codes already; B's has none.
    mirrored_on_a_removed_device(&pool, "ws_a", "ac_a_old").await;
    let own = sqlx::postgres::PgPoolOptions::new().connect_with((*pool.connect_options()).clone()).await.unwrap();
    let extra = "[server]\nrun_mode = \"all\"\n[import]\non_start = true";
    let app = spawn_app_with(own, two_workspaces(&seam.url(), extra)).await;
    let db = pool.clone();
    eventually("B's import finished on start", || {
        let db = db.clone();
        async move {
            let runs: Vec<(String, bool)> =
                sqlx::query_as("SELECT workspace_key, finished_at IS NOT NULL FROM import_runs")
                    .fetch_all(&db)
                    .await
                    .unwrap();
            (runs == [("ws_b".to_owned(), true)]).then_some(()).ok_or(format!("{runs:?}"))
        }
    })
    .await;
    app.stop().await;
    assert_eq!(seam.credentials_used("/devices/list"), ["seam_key_b"], "A was not imported");
    let codes: Vec<String> =
        sqlx::query_scalar("SELECT access_code_id FROM access_codes ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(codes, ["ac_a_old", "ac_b1", "ac_b2"]);
}

/// Runs the real binary with the two workspaces from a file.
fn cli_of_two(pool: &PgPool, seam: &StandIn, args: &[&str]) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("sas_two_workspaces_{}.toml", uuid::Uuid::new_v4()));
    let file = TWO_WORKSPACES.replace("[seam]\n    api_key = \"\"\n", "");
    std::fs::write(&path, file).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"))
        .args(args)
        .env("DATABASE_URL", test_kit::database_url(&pool.connect_options()))
        .env("SEAM_WORKSPACES_FILE", &path)
        .env("SEAM_API_URL", seam.url())
        .env("APP_LOG__FORMAT", "text")
        .env_remove("SEAM_API_KEY")
        .env_remove("SEAM_WEBHOOK_SECRET")
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_file(&path);
    output
}

#[sqlx::test]
async fn the_cli_imports_every_workspace_or_the_one_asked_for_and_status_shows_each(pool: PgPool) {
    let seam = seam_with_devices().await;
    let output = cli_of_two(&pool, &seam, &["import", "--workspace", "Pine Lodge"]);
    assert!(output.status.success(), "{output:?}");
    let printed = stdout(&output);
    assert!(printed.contains("workspace Pine Lodge (ws_b)") && !printed.contains("ws_a"), "{printed}");
    assert!(printed.contains("import finished (run 1): 1 device(s), 2 code(s): 2 created"), "{printed}");
    assert_eq!(seam.credentials_used("/devices/list"), ["seam_key_b"]);

    let output = cli_of_two(&pool, &seam, &["import"]);
    assert!(output.status.success(), "{output:?}");
    let printed = stdout(&output);
    let a = printed.find("workspace Harbour View (ws_a)").expect(&printed);
    let b = printed.find("workspace Pine Lodge (ws_b)").expect(&printed);
    assert!(a < b && printed[a..b].contains("2 device(s), 2 code(s): 2 created"), "{printed}");
    assert!(printed[b..].contains("1 device(s), 2 code(s): 0 created, 0 changed, 2 unchanged"), "{printed}");

    let unknown = cli_of_two(&pool, &seam, &["import", "--workspace", "ws_z"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no configured workspace"), "{unknown:?}");

    let text = stdout(&crate::operations::cli(&pool, &["status"]));
    let a = text.find("workspace           Harbour View (ws_a)").expect(&text);
    let b = text.find("workspace           Pine Lodge (ws_b)").expect(&text);
    assert!(
        text[a..b].contains("import              run 2 finished") && text[a..b].contains("2/2 device(s) done"),
        "{text}"
    );
    assert!(
        text[b..].contains("import              run 3 finished") && text[b..].contains("1/1 device(s) done"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&stdout(&crate::operations::cli(&pool, &["status", "--json"]))).unwrap();
    let imports: Vec<(Value, Value)> = json["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w["import"].is_null())
        .map(|w| (w["workspace_id"].clone(), w["import"]["run"].clone()))
        .collect();
    assert_eq!(imports, [(json!("ws_a"), json!(2)), (json!("ws_b"), json!(3))]);
}
