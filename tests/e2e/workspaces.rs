//! Many workspaces (issue 14) against Seam's official fake: two workspaces, each with
//! its own API key, locks and webhook endpoint secret, served by one service from a
//! workspaces file. The harness's front records which key every Seam call used.
//!
//! Catch-up is off in these tests (codes are driven by webhooks only): what it reads,
//! and with which key, is not what they are about.

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually;

use crate::rig::{E2e, Harness, WorkspaceEntry, WorkspacesFile, contract_verdict, new_webhook_secret};

const CATCH_UP_OFF: &[(&str, &str)] = &[("APP_CATCH_UP__INTERVAL_SECONDS", "0")];

fn id(code: &Value) -> String {
    code["access_code_id"].as_str().expect("access_code_id").to_owned()
}

/// Asserts that every Seam call naming `access_code_id` used `key`, and that there
/// was at least one `/access_codes/get`.
async fn fetched_only_with(e2e: &E2e, access_code_id: &str, key: &str) {
    let calls = e2e.harness.calls_for(access_code_id).await;
    assert!(calls.iter().any(|(route, _)| route.ends_with(" /access_codes/get")), "{access_code_id}: {calls:?}");
    assert!(
        calls.iter().all(|(_, used)| used == key),
        "{access_code_id} fetched with another key than {key}: {calls:?}"
    );
}

/// Waits until `/readyz` (as an operator) answers `status` and `until` holds for its body.
async fn readiness(e2e: &E2e, status: u16, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("/readyz to answer {status} with {what}"), || async {
        match e2e.readyz().await {
            (s, body) if s == status && until(&body) => Ok(body),
            (s, body) => Err(format!("{s} {body}")),
        }
    })
    .await
}

/// The `/readyz` entry of the workspace named `name`.
fn workspace_entry<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["workspaces"]
        .as_array()
        .and_then(|list| list.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("no workspace {name} in {body}"))
}

#[sqlx::test]
async fn codes_of_two_workspaces_are_each_fetched_with_their_own_key(_: PgPoolOptions, database: PgConnectOptions) {
    let fake = Harness::start().await;
    let (a, b) = (fake.info.a().clone(), fake.info.b().clone());
    // B without its id: the service asks Seam which workspace the key reaches.
    let entries = [WorkspaceEntry::of(&a), WorkspaceEntry::of(&b).without_id()];
    let e2e = E2e::start_workspaces(fake, database, &entries, None, CATCH_UP_OFF).await;
    let fake = &e2e.harness;

    let asked = fake.credentials().await["by_route"]["GET /workspaces/get"].clone();
    assert!(asked[&a.api_key].as_u64() >= Some(1) && asked[&b.api_key].as_u64() >= Some(1), "{asked}");
    let body = readiness(&e2e, 200, "both workspaces known", |body| {
        body["workspaces"].as_array().is_some_and(|list| list.len() == 2 && list.iter().all(|w| w["ok"] == true))
    })
    .await;
    assert_eq!(workspace_entry(&body, &b.name)["workspace_id"], json!(b.workspace_id), "{body}");

    let (code_a, created_a) = fake.create_code_on(&a.device_ids[0], "Harbour View front door").await;
    let (code_b, created_b) = fake.create_code_on(&b.device_ids[0], "Pine Lodge front door").await;
    let (id_a, id_b) = (id(&code_a), id(&code_b));
    assert_eq!((&code_b["workspace_id"], &created_b["workspace_id"]), (&json!(b.workspace_id), &json!(b.workspace_id)));
    e2e.deliver_as(&created_a, &a.webhook_secret).await;
    e2e.deliver_as(&created_b, &b.webhook_secret).await;
    let row_a = e2e.applied(&id_a, &created_a).await;
    let row_b = e2e.applied(&id_b, &created_b).await;
    assert_eq!(row_a.workspace_id.as_deref(), Some(a.workspace_id.as_str()));
    assert_eq!(row_b.workspace_id.as_deref(), Some(b.workspace_id.as_str()));
    assert_eq!((row_a.status.as_deref(), row_b.status.as_deref()), (Some("setting"), Some("setting")));

    // And each later change, in both.
    for (code, workspace) in [(&id_a, &a), (&id_b, &b)] {
        fake.set_state(code, json!({ "status": "set" })).await;
        let set = fake.event("access_code.set_on_device", code, json!({})).await;
        assert_eq!(set["workspace_id"], json!(workspace.workspace_id), "{set}");
        e2e.deliver_as(&set, &workspace.webhook_secret).await;
        let row = e2e.applied(code, &set).await;
        assert_eq!(row.status.as_deref(), Some("set"));
        assert_eq!(row.workspace_id.as_deref(), Some(workspace.workspace_id.as_str()));
    }
    fetched_only_with(&e2e, &id_a, &a.api_key).await;
    fetched_only_with(&e2e, &id_b, &b.api_key).await;
    e2e.finish().await;
}

#[sqlx::test]
async fn a_workspaces_secret_verifies_its_own_events_only(_: PgPoolOptions, database: PgConnectOptions) {
    let fake = Harness::start().await;
    let (a, b) = (fake.info.a().clone(), fake.info.b().clone());
    let entries = [WorkspaceEntry::of(&a), WorkspaceEntry::of(&b)];
    let e2e = E2e::start_workspaces(fake, database, &entries, None, CATCH_UP_OFF).await;
    let fake = &e2e.harness;
    let (code, created) = fake.create_code_on(&b.device_ids[1], "Pine Lodge cleaner").await;
    let code = id(&code);

    // B's event signed with A's secret: a valid signature, of the wrong endpoint.
    let refused = e2e.deliver_signed(&created, &a.webhook_secret).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.body["error"], "workspace_mismatch", "{refused:?}");
    for table in ["seam_events", "access_code_refetches", "access_codes", "access_code_history"] {
        assert_eq!(e2e.count(table).await, 0, "nothing written to {table}");
    }
    assert!(fake.calls_for(&code).await.is_empty(), "nothing fetched");
    let metrics = e2e.metrics().await;
    assert!(metrics.contains("seam_access_sync_webhook_workspace_mismatches_total 1"), "{metrics}");

    // Signed with B's secret: accepted, and fetched with B's key.
    e2e.deliver_as(&created, &b.webhook_secret).await;
    let row = e2e.applied(&code, &created).await;
    assert_eq!(row.workspace_id.as_deref(), Some(b.workspace_id.as_str()));
    fetched_only_with(&e2e, &code, &b.api_key).await;
    e2e.finish().await;
}

#[sqlx::test]
async fn an_event_of_an_unconfigured_workspace_is_kept_and_fetched_once_the_workspace_is_added(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let fake = Harness::start().await;
    let (a, b) = (fake.info.a().clone(), fake.info.b().clone());
    let c = fake.add_workspace("E2E Workspace C", 1).await;
    // SEAM_WEBHOOK_SECRET verifies any workspace's events; the file has A and B only.
    let any_secret = new_webhook_secret();
    let entries = [WorkspaceEntry::of(&a), WorkspaceEntry::of(&b)];
    let e2e = E2e::start_workspaces(fake, database, &entries, Some(&any_secret), CATCH_UP_OFF).await;
    let fake = &e2e.harness;

    let (code_c, created_c) = fake.create_code_on(&c.device_ids[0], "Lakeside front door").await;
    let id_c = id(&code_c);
    assert_eq!(created_c["workspace_id"], json!(c.workspace_id));
    e2e.deliver_as(&created_c, &any_secret).await;
    assert_eq!(e2e.stored_events(&id_c).await.len(), 1, "stored");
    let metrics = e2e.metrics().await;
    assert!(metrics.contains("seam_access_sync_events_unroutable_total 1"), "{metrics}");

    // The worker goes on with what it can fetch (A's code, delivered after C's)...
    let (code_a, created_a) = fake.create_code_on(&a.device_ids[0], "Harbour View front door").await;
    e2e.deliver_as(&created_a, &a.webhook_secret).await;
    e2e.applied(&id(&code_a), &created_a).await;
    // ... and C's waits in the queue, never fetched (no key reaches C).
    assert!(e2e.mirror(&id_c).await.is_none());
    let queued = e2e.queue_row(&id_c).await.expect("C's code waits in the queue");
    assert_eq!((queued["attempts"].clone(), queued["dead_lettered_at"].clone()), (json!(0), Value::Null), "{queued}");
    assert!(fake.calls_for(&id_c).await.is_empty(), "no Seam call for C's code");

    // The operator adds C to the file and restarts (same database, same fake).
    let entries = [WorkspaceEntry::of(&a), WorkspaceEntry::of(&b), WorkspaceEntry::of(&c)];
    let e2e = e2e.restart_with_workspaces(&entries).await;
    let row = e2e.applied(&id_c, &created_c).await;
    assert_eq!(row.workspace_id.as_deref(), Some(c.workspace_id.as_str()));
    assert_eq!(row.status.as_deref(), Some("setting"));
    fetched_only_with(&e2e, &id_c, &c.api_key).await;
    // C's own endpoint secret now verifies C's events too.
    let fake = &e2e.harness;
    fake.set_state(&id_c, json!({ "status": "set" })).await;
    let set = fake.event("access_code.set_on_device", &id_c, json!({})).await;
    e2e.deliver_as(&set, &c.webhook_secret).await;
    assert_eq!(e2e.applied(&id_c, &set).await.status.as_deref(), Some("set"));
    fetched_only_with(&e2e, &id_c, &c.api_key).await;
    e2e.finish().await;
}

#[sqlx::test]
async fn a_revoked_key_in_one_workspace_leaves_the_other_current(_: PgPoolOptions, database: PgConnectOptions) {
    let fake = Harness::start().await;
    let (a, b) = (fake.info.a().clone(), fake.info.b().clone());
    let entries = [WorkspaceEntry::of(&a), WorkspaceEntry::of(&b)];
    let e2e = E2e::start_workspaces(fake, database, &entries, None, CATCH_UP_OFF).await;
    let fake = &e2e.harness;
    let mut ids = Vec::new();
    for (device, workspace) in [(&a.device_ids[0], &a), (&b.device_ids[0], &b)] {
        let (code, created) = fake.create_code_on(device, &format!("{} front door", workspace.name)).await;
        e2e.deliver_as(&created, &workspace.webhook_secret).await;
        e2e.applied(&id(&code), &created).await;
        ids.push(id(&code));
    }
    let (id_a, id_b) = (&ids[0], &ids[1]);

    // A's key is revoked in Seam.
    let (old_a, _) = fake.rotate_key_of(&a.workspace_id).await;
    assert_eq!(old_a, a.api_key, "the service's key for A is the one revoked");
    let mut set = Vec::new();
    for (code, workspace) in [(id_a, &a), (id_b, &b)] {
        fake.set_state(code, json!({ "status": "set" })).await;
        let event = fake.event("access_code.set_on_device", code, json!({})).await;
        e2e.deliver_as(&event, &workspace.webhook_secret).await;
        set.push(event);
    }
    // B's mirror is current...
    assert_eq!(e2e.applied(id_b, &set[1]).await.status.as_deref(), Some("set"));
    // ... A's re-fetch is kept, failing on the key, and its mirror is not touched.
    let queued = eventually("A's failed attempt to be recorded on its re-fetch", || async {
        match e2e.queue_row(id_a).await {
            Some(row) if row["last_error"].as_str().is_some_and(|e| e.contains("401")) => Ok(row),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(queued["dead_lettered_at"], Value::Null, "{queued}");
    assert_eq!(e2e.mirror(id_a).await.unwrap().status.as_deref(), Some("setting"));

    // Readiness: still ready (B is served); A's entry says what is wrong.
    let body = readiness(&e2e, 200, "A's entry not ok", |body| {
        body["workspaces"].as_array().is_some_and(|list| list.iter().any(|w| w["name"] == a.name && w["ok"] == false))
    })
    .await;
    assert_eq!(body["ready"], true, "{body}");
    let entry_a = workspace_entry(&body, &a.name);
    assert_eq!(entry_a["workspace_id"], json!(a.workspace_id), "{body}");
    let reason = entry_a["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("401") && !reason.contains(&old_a), "{body}");
    assert_eq!(workspace_entry(&body, &b.name)["ok"], true, "{body}");

    // B keeps updating: a new code, and a removal.
    let (code, created) = fake.create_code_on(&b.device_ids[1], "Pine Lodge back door").await;
    e2e.deliver_as(&created, &b.webhook_secret).await;
    assert_eq!(e2e.applied(&id(&code), &created).await.workspace_id.as_deref(), Some(b.workspace_id.as_str()));
    fake.delete_code(id_b).await;
    let deleted = fake.event("access_code.deleted", id_b, json!({})).await;
    e2e.deliver_as(&deleted, &b.webhook_secret).await;
    assert!(e2e.applied(id_b, &deleted).await.deleted_at.is_some());
    fetched_only_with(&e2e, id_b, &b.api_key).await;
    fetched_only_with(&e2e, id_a, &old_a).await;
    assert_eq!(e2e.mirror(id_a).await.unwrap().status.as_deref(), Some("setting"), "A still waits for its key");
    e2e.finish().await;
}

#[sqlx::test]
async fn a_workspaces_file_with_a_key_seam_rejects_stops_the_start_with_exit_code_2(
    _: PgPoolOptions,
    database: PgConnectOptions,
) {
    let fake = Harness::start().await;
    let (a, b) = (fake.info.a().clone(), fake.info.b().clone());
    let (old_b, _) = fake.rotate_key_of(&b.workspace_id).await;
    let file = WorkspacesFile::write(&[WorkspaceEntry::of(&a), WorkspaceEntry::of(&b).api_key(&old_b)]);

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seam-access-sync"));
    for (key, _) in std::env::vars() {
        if key.starts_with("APP_") || key == "RUST_LOG" || key.starts_with("SEAM_") || key == "API_TOKEN" {
            command.env_remove(key);
        }
    }
    command
        .arg("serve")
        .env("DATABASE_URL", test_kit::database_url(&database))
        .env("SEAM_WORKSPACES_FILE", &file.path)
        .env("SEAM_API_URL", &fake.info.seam_api_url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("APP_LOG__FORMAT", "text")
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}\nstdout: {stdout}");
    let reasons: Vec<&str> = stderr.lines().filter(|line| line.contains("refusing to start")).collect();
    assert_eq!(reasons.len(), 1, "one line says why: {stderr}");
    let reason = reasons[0];
    assert!(
        reason.contains(&format!("{}: Seam rejected the credential", b.name)) && reason.contains("401"),
        "{reason}"
    );
    assert!(reason.contains("seam-request-id: "), "naming Seam's request: {reason}");
    assert!(!reason.contains(&format!("{}:", a.name)), "A's key is fine: {reason}");
    assert!(!stderr.contains(&old_b) && !stdout.contains(&old_b), "never the key itself: {stderr}");

    // It asked Seam with each key, and broke none of Seam's document doing so.
    let asked = fake.credentials().await["by_route"]["GET /workspaces/get"].clone();
    assert!(asked[&a.api_key].as_u64() >= Some(1) && asked[&old_b].as_u64() >= Some(1), "{asked}");
    if let Err(violations) = contract_verdict(&fake.contract_report().await) {
        panic!("{violations}");
    }
}
