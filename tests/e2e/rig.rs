//! The e2e rig: Seam's official fake (`tests/e2e/harness.mjs`, a Node child process)
//! and the real service (the binary, run_mode "all": webhook endpoint + worker, as
//! the test kit runs it) on the test's own database, plus ways to drive the fake and
//! to wait for the mirror.
//!
//! Nothing here sleeps "long enough": every wait is the kit's `eventually`, which
//! polls for a condition until a deadline and then fails saying what it waited for
//! and what it saw last.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use test_kit::logs::LogBuffer;
use test_kit::process::{Output, Process};
use test_kit::{DEADLINE, Service, ServiceConfig, eventually};

/// How long the harness may take to print its ready line.
const HARNESS_START_DEADLINE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ the harness

/// The harness's ready line.
#[derive(Debug, Clone, Deserialize)]
pub struct HarnessInfo {
    pub seam_api_url: String,
    pub api_key: String,
    pub device_ids: Vec<String>,
    pub workspace_id: String,
    pub control_url: String,
    pub webhook_secret: String,
    /// Every workspace the fake holds at start: A (the fields above) and B.
    pub workspaces: Vec<WorkspaceInfo>,
}

/// A workspace of the fake: its own key, locks and webhook secret (the ready line's
/// `workspaces`, `POST /workspaces`).
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceInfo {
    pub name: String,
    pub workspace_id: String,
    pub api_key: String,
    pub device_ids: Vec<String>,
    pub webhook_secret: String,
}

impl HarnessInfo {
    /// Workspace A, whose key and secret are the top-level fields.
    pub fn a(&self) -> &WorkspaceInfo {
        &self.workspaces[0]
    }
    /// Workspace B.
    pub fn b(&self) -> &WorkspaceInfo {
        &self.workspaces[1]
    }
}

/// `node tests/e2e/harness.mjs`, a child process whose logs go to the test's output
/// (shown when a test fails). Dropping it closes its stdin, the harness's "exit now"
/// (so it dies with this process too), and kills it if it does not within 5 s.
pub struct Harness {
    pub info: HarnessInfo,
    http: reqwest::Client,
    _process: Process,
}

/// What `/deliver` reports: the service's answer to a signed delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub status: u16,
    pub body: Value,
    pub msg_id: String,
}

impl Harness {
    pub async fn start() -> Harness {
        seam_access_sync::install_tls_provider();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("e2e");
        assert!(
            ["@seamapi/fake-seam-connect", "@seamapi/types", "ajv-formats"]
                .iter()
                .all(|package| dir.join("node_modules").join(package).is_dir()),
            "{}/node_modules is missing or stale: the e2e tests need the harness's npm packages \
             (Seam's fake, Seam's OpenAPI document, the validator). Run `npm ci` in tests/e2e \
             (cd tests/e2e && npm ci) and try again.",
            dir.display()
        );
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
        let mut command = Command::new(&node);
        command.arg(dir.join("harness.mjs")).current_dir(&dir).env_remove("E2E_HARNESS_IGNORE_STDIN");
        let output = Output { file: None, echo: Some("[harness] ".into()) };
        let mut process =
            Process::spawn("the harness", command, LogBuffer::default(), output, Some(Duration::from_secs(5)))
                .unwrap_or_else(|e| panic!("{e}: the e2e tests need Node >= 20.9 on PATH (or NODE=/path/to/node)"));
        // Its contract is one line on stdout, the ready line.
        let line = process.line(HARNESS_START_DEADLINE, |line| Some(line.to_owned())).await.unwrap_or_else(|e| {
            panic!("the harness was not ready: {e:#}\n(its log is above; try `node tests/e2e/smoke.mjs`)")
        });
        let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad harness ready line ({e}): {line}"));
        Harness { info, http: reqwest::Client::new(), _process: process }
    }

    /// A control-API call; panics unless it answers 2xx.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.try_call(method.clone(), path, body).await;
        assert!(status.is_success(), "harness {method} {path} answered {status}: {answer}");
        answer
    }

    pub async fn try_call(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.info.control_url))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("harness {method} {path}: {e}"));
        let status = response.status();
        let answer = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, answer)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Creates a code on device `device` through the fake's API (status `setting`, or
    /// `unset` when time-bound). Returns the code and the `access_code.created` event
    /// the fake recorded (not delivered yet).
    pub async fn create_code(&self, device: usize, name: &str, extra: Value) -> (Value, Value) {
        let mut body = json!({ "device_id": self.info.device_ids[device], "name": name });
        merge(&mut body, extra);
        let answer = self.post("/codes", body).await;
        assert_eq!(answer["event"]["event_type"], "access_code.created", "{answer}");
        (answer["access_code"].clone(), answer["event"].clone())
    }

    /// Creates a code on the device `device_id` (of any workspace: the harness uses the
    /// key of the device's workspace, so the code says that workspace).
    pub async fn create_code_on(&self, device_id: &str, name: &str) -> (Value, Value) {
        let answer = self.post("/codes", json!({ "device_id": device_id, "name": name })).await;
        assert_eq!(answer["event"]["event_type"], "access_code.created", "{answer}");
        (answer["access_code"].clone(), answer["event"].clone())
    }

    /// Adds a workspace to the fake: its own key, `devices` locks, webhook secret.
    pub async fn add_workspace(&self, name: &str, devices: usize) -> WorkspaceInfo {
        let answer = self.post("/workspaces", json!({ "name": name, "devices": devices })).await;
        serde_json::from_value(answer["workspace"].clone()).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    /// Removes the current key of workspace `workspace_id` from the fake and makes a
    /// new one: `(old, new)`.
    pub async fn rotate_key_of(&self, workspace_id: &str) -> (String, String) {
        let answer = self.post("/api_keys/rotate", json!({ "workspace_id": workspace_id })).await;
        (answer["old_key"].as_str().unwrap().to_owned(), answer["new_key"].as_str().unwrap().to_owned())
    }

    /// Which credential each Seam call through the front used (`GET /credentials`):
    /// `calls`, `by_route`, `by_access_code`.
    pub async fn credentials(&self) -> Value {
        self.call(reqwest::Method::GET, "/credentials", json!({})).await
    }

    /// How many Seam calls so far went to `route` (`"POST /access_codes/pull_backup_access_code"`),
    /// whatever their credential (the front's `/credentials` record counts every call).
    pub async fn calls_to(&self, route: &str) -> u64 {
        let record = self.credentials().await;
        record["by_route"][route].as_object().map_or(0, |per_key| per_key.values().filter_map(Value::as_u64).sum())
    }

    /// Holds back the answer to the next call of `route` for `ms` (`POST /hold`): the
    /// fake answers at once (Seam has acted), the caller waits.
    pub async fn hold_next(&self, route: &str, ms: u64) {
        self.post("/hold", json!({ "route": route, "ms": ms })).await;
    }

    /// How many answers to `route` the front is holding back now (`GET /holds`).
    pub async fn holding(&self, route: &str) -> u64 {
        let answer = self.call(reqwest::Method::GET, "/holds", json!({})).await;
        answer["holds"][route]["holding"].as_u64().unwrap_or(0)
    }

    /// The Seam calls so far that named `access_code_id`: `(route, credential)` each.
    pub async fn calls_for(&self, access_code_id: &str) -> Vec<(String, String)> {
        let record = self.credentials().await;
        record["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|call| {
                call["access_code_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == access_code_id))
            })
            .map(|call| {
                (call["route"].as_str().unwrap_or("?").to_owned(), call["credential"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    /// Makes an unmanaged code on device `device` (one Seam found on the lock), through
    /// the fake's `/access_codes/simulate/create_unmanaged_access_code`; returns it.
    pub async fn create_unmanaged_code(&self, device: usize, name: &str) -> Value {
        let body = json!({ "device_id": self.info.device_ids[device], "name": name });
        self.post("/unmanaged_codes", body).await["access_code"].clone()
    }

    /// Patches a code in the fake (`status`, `warnings`, `errors`, …); returns what
    /// `/access_codes/get` now answers.
    pub async fn set_state(&self, access_code_id: &str, patch: Value) -> Value {
        self.post(&format!("/codes/{access_code_id}/state"), patch).await["access_code"].clone()
    }

    /// Deletes a code from the fake: `/access_codes/get` answers 404 from now on.
    pub async fn delete_code(&self, access_code_id: &str) {
        self.call(reqwest::Method::DELETE, &format!("/codes/{access_code_id}"), json!({})).await;
    }

    /// Records an `access_code.*` event in the fake (filled in like Seam's) and returns it.
    pub async fn event(&self, event_type: &str, access_code_id: &str, extra: Value) -> Value {
        let mut body = json!({ "event_type": event_type, "access_code_id": access_code_id });
        merge(&mut body, extra);
        self.post("/events", body).await["event"].clone()
    }

    /// What the fake's `/access_codes/get` answers for a code (with the start-up key):
    /// `(HTTP status, access_code or error)`.
    pub async fn fake_get(&self, access_code_id: &str) -> (u16, Value) {
        self.fake_get_with(&self.info.api_key, access_code_id).await
    }

    /// The same with `api_key` (the front answers 404 for another workspace's code).
    pub async fn fake_get_with(&self, api_key: &str, access_code_id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/access_codes/get", self.info.seam_api_url))
            .query(&[("access_code_id", access_code_id)])
            .bearer_auth(api_key)
            .send()
            .await
            .expect("the fake's /access_codes/get");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("the fake answers JSON");
        (status, if status == 200 { body["access_code"].clone() } else { body["error"].clone() })
    }

    /// Signs `event` like Svix and POSTs it to `url`.
    pub async fn deliver(&self, url: &str, event: &Value) -> Delivery {
        self.deliver_with(url, json!({ "event": event })).await
    }

    /// `/deliver` with any of `msg_id`, `timestamp`, `secret` set.
    pub async fn deliver_with(&self, url: &str, mut body: Value) -> Delivery {
        merge(&mut body, json!({ "url": url }));
        let answer = self.post("/deliver", body).await;
        Delivery {
            status: answer["status"].as_u64().expect("status") as u16,
            body: serde_json::from_str(answer["body"].as_str().unwrap_or("null")).unwrap_or(answer["body"].clone()),
            msg_id: answer["msg_id"].as_str().expect("msg_id").to_owned(),
        }
    }

    /// Removes the current API key from the fake and makes a new one: `(old, new)`.
    pub async fn rotate_key(&self) -> (String, String) {
        let answer = self.post("/api_keys/rotate", json!({})).await;
        (answer["old_key"].as_str().unwrap().to_owned(), answer["new_key"].as_str().unwrap().to_owned())
    }

    /// Makes `token` a valid key in the fake again.
    pub async fn add_key(&self, token: &str) {
        self.post("/api_keys", json!({ "token": token })).await;
    }

    /// What the harness's front found checking every Seam call against Seam's OpenAPI
    /// document (`GET /contract/violations`): `violations`, `violation_count`,
    /// `requests_checked`, `by_route`, `notes`.
    pub async fn contract_report(&self) -> Value {
        self.call(reqwest::Method::GET, "/contract/violations", json!({})).await
    }

    /// Forgets what the front found so far.
    pub async fn reset_contract_report(&self) {
        self.call(reqwest::Method::DELETE, "/contract/violations", json!({})).await;
    }

    /// Headers from npm `svix`'s `Webhook.sign`.
    pub async fn sign(&self, payload: &str, msg_id: &str, timestamp: i64) -> Value {
        self.post("/sign", json!({ "payload": payload, "msg_id": msg_id, "timestamp": timestamp })).await["headers"]
            .clone()
    }

    /// `SeamWebhook.verify` (Seam's SDK) on `payload` + `headers`: `{"ok", "event"|"error"}`.
    pub async fn verify(&self, payload: &str, headers: Value) -> Value {
        self.post("/verify", json!({ "payload": payload, "headers": headers })).await
    }
}

/// The verdict on a contract report: Err with every violation, one a line, and where to
/// look, when the service (or a test through the Seam URL) broke Seam's document.
pub fn contract_verdict(report: &Value) -> Result<(), String> {
    let count = report["violation_count"].as_u64().unwrap_or(0);
    if count == 0 {
        return Ok(());
    }
    let mut lines = vec![format!(
        "{count} violation(s) of Seam's OpenAPI document (@seamapi/types) in {} Seam call(s) checked (tests/e2e/contract.mjs; the harness's fixes of the fake are in tests/e2e/README.md):",
        report["requests_checked"]
    )];
    for v in report["violations"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {}
      request: {}",
            v["text"].as_str().unwrap_or("?"),
            v["request"].as_str().unwrap_or("?")
        ));
    }
    if report["violations"].as_array().map_or(0, Vec::len) < count as usize {
        lines.push("  (the first ones only)".into());
    }
    Err(lines.join("\n"))
}

/// Copies the fields of the object `extra` into the object `into`.
pub fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

// ------------------------------------------------------------------ the service

/// How the service reaches Seam and checks webhooks.
#[derive(Debug, Clone)]
pub enum Access {
    /// `SEAM_API_KEY` and `SEAM_WEBHOOK_SECRET`: one workspace, as before issue 14.
    Key { api_key: String, webhook_secret: String },
    /// `SEAM_WORKSPACES_FILE` naming a file of `[[workspaces]]` entries; `SEAM_API_KEY`
    /// empty; `SEAM_WEBHOOK_SECRET` the secret that verifies any workspace's events
    /// (`any_secret`), or empty.
    Workspaces { file: Arc<WorkspacesFile>, any_secret: Option<String> },
}

/// One `[[workspaces]]` entry of the service's workspaces file.
#[derive(Debug, Clone)]
pub struct WorkspaceEntry {
    pub name: String,
    pub workspace_id: Option<String>,
    pub api_key: String,
    pub webhook_secret: Option<String>,
}

impl WorkspaceEntry {
    /// The entry an operator writes for `workspace`: name, id, key, endpoint secret.
    pub fn of(workspace: &WorkspaceInfo) -> WorkspaceEntry {
        WorkspaceEntry {
            name: workspace.name.clone(),
            workspace_id: Some(workspace.workspace_id.clone()),
            api_key: workspace.api_key.clone(),
            webhook_secret: Some(workspace.webhook_secret.clone()),
        }
    }

    /// Without `workspace_id`: the service asks Seam which workspace the key reaches.
    pub fn without_id(mut self) -> WorkspaceEntry {
        self.workspace_id = None;
        self
    }

    pub fn api_key(mut self, api_key: &str) -> WorkspaceEntry {
        self.api_key = api_key.to_owned();
        self
    }
}

/// A workspaces file (TOML) in a directory of its own, removed on drop.
#[derive(Debug)]
pub struct WorkspacesFile {
    pub path: PathBuf,
    dir: PathBuf,
}

impl WorkspacesFile {
    pub fn write(entries: &[WorkspaceEntry]) -> WorkspacesFile {
        let dir = std::env::temp_dir().join(format!("sas_e2e_workspaces_{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temp dir for the workspaces file");
        let path = dir.join("workspaces.toml");
        std::fs::write(&path, workspaces_toml(entries)).expect("write the workspaces file");
        WorkspacesFile { path, dir }
    }
}

impl Drop for WorkspacesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `entries` as an operator's TOML (`[[workspaces]]` tables).
pub fn workspaces_toml(entries: &[WorkspaceEntry]) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a TOML basic string");
    let mut toml = String::new();
    for entry in entries {
        toml.push_str("[[workspaces]]\n");
        toml.push_str(&format!("name = {}\n", quote(&entry.name)));
        if let Some(id) = &entry.workspace_id {
            toml.push_str(&format!("workspace_id = {}\n", quote(id)));
        }
        toml.push_str(&format!("api_key = {}\n", quote(&entry.api_key)));
        if let Some(secret) = &entry.webhook_secret {
            toml.push_str(&format!("webhook_secret = {}\n", quote(secret)));
        }
        toml.push('\n');
    }
    toml
}

/// A fresh `whsec_` secret (32 random bytes), e.g. one that verifies any workspace.
pub fn new_webhook_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Starts the service (the kit's spawner: the binary, port 0) with run_mode "all"
/// and a fast worker against the harness's fake, reaching Seam as `access` says;
/// `settings` are `APP_*` variables laid over the e2e defaults (e.g. a faster sweep).
/// Its log goes to the test's output and stays readable (`Service::logs`).
async fn start_service(
    database: &str,
    harness: &HarnessInfo,
    access: &Access,
    settings: &[(String, String)],
) -> Service {
    let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into());
    let config = ServiceConfig::new(env!("CARGO_BIN_EXE_seam-access-sync"), database, &harness.seam_api_url)
        .log_filter(&log_filter)
        .echo("[service] ")
        .env("APP_SERVER__RUN_MODE", "all")
        .env("APP_API__TOKENS", OPERATOR_TOKEN)
        .env("APP_WORKER__CONCURRENCY", 4)
        .env("APP_WORKER__POLL_INTERVAL_MS", 200)
        .env("APP_WORKER__BACKOFF_BASE_MS", 100)
        .env("APP_WORKER__BACKOFF_MAX_MS", 1000)
        .env("APP_WORKER__AUTH_FAILURE_RETRY_SECONDS", 1)
        .env("APP_DATABASE__MAX_CONNECTIONS", 8)
        .env("APP_DATABASE__ACQUIRE_TIMEOUT_MS", 10_000);
    let config = match access {
        Access::Key { api_key, webhook_secret } => config.api_key(api_key).webhook_secret(webhook_secret),
        Access::Workspaces { file, any_secret } => config
            .api_key("")
            .webhook_secret(any_secret.as_deref().unwrap_or(""))
            .env("SEAM_WORKSPACES_FILE", file.path.display()),
    };
    let config = settings.iter().fold(config, |config, (key, value)| config.env(key, value));
    Service::start(config).await.unwrap_or_else(|e| panic!("the service did not start: {e:#}"))
}

/// Graceful shutdown, as on SIGTERM; waits for it.
async fn stop_service(mut service: Service) {
    let status = service.stop(DEADLINE).await.expect("the service stops within the deadline");
    assert!(status.success(), "the service stopped cleanly: {status}");
}

// ------------------------------------------------------------------ the rig

/// One test's world: a fresh fake, the service on the test's database, and a
/// separate pool for the test's own queries.
pub struct E2e {
    pub service: Service,
    pub harness: Harness,
    pub db: PgPool,
    pub http: reqwest::Client,
    /// The test's database, as the service's `DATABASE_URL`.
    database: String,
    settings: Vec<(String, String)>,
    access: Access,
}

/// A row of the mirror.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MirrorRow {
    pub access_code_id: String,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub name: Option<String>,
    #[sqlx(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub is_managed: bool,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub warnings: Json<Value>,
    pub errors: Json<Value>,
    pub code: Option<String>,
    pub access_code: Option<Json<Value>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_event_id: Option<String>,
    pub last_event_type: Option<String>,
    pub last_event_occurred_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
}

/// A row of `access_code_history`, reduced to what a step changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub change: String,
    pub previous_status: Option<String>,
    pub status: Option<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    pub event_type: Option<String>,
}

impl Step {
    pub fn new(change: &str, previous: Option<&str>, status: Option<&str>, event_type: &str) -> Step {
        Step {
            change: change.into(),
            previous_status: previous.map(Into::into),
            status: status.map(Into::into),
            warnings: vec![],
            errors: vec![],
            event_type: Some(event_type.into()),
        }
    }
    pub fn warnings(mut self, codes: &[&str]) -> Step {
        self.warnings = codes.iter().map(|c| (*c).to_owned()).collect();
        self
    }
    pub fn errors(mut self, codes: &[&str]) -> Step {
        self.errors = codes.iter().map(|c| (*c).to_owned()).collect();
        self
    }
}

pub fn codes(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|items| items.iter().map(|i| i[field].as_str().unwrap_or("?").to_owned()).collect())
        .unwrap_or_default()
}

impl E2e {
    /// Starts a fresh fake and the service on the test's database.
    pub async fn start(database: PgConnectOptions) -> E2e {
        E2e::start_with(database, &[]).await
    }

    /// Same, with `settings` (`APP_*` variables) laid over the e2e defaults.
    pub async fn start_with(database: PgConnectOptions, settings: &[(&str, &str)]) -> E2e {
        E2e::start_on(Harness::start().await, database, settings).await
    }

    /// Same, on a fake the test has already filled (codes that exist before the
    /// service starts). Waits for the start-up catch-up run unless catch-up is off.
    pub async fn start_on(harness: Harness, database: PgConnectOptions, settings: &[(&str, &str)]) -> E2e {
        let access =
            Access::Key { api_key: harness.info.api_key.clone(), webhook_secret: harness.info.webhook_secret.clone() };
        E2e::start_as(harness, database, access, settings).await
    }

    /// The service serving the workspaces `entries` (a workspaces file), with
    /// `any_secret` as `SEAM_WEBHOOK_SECRET` (verifying any workspace's events) or none.
    pub async fn start_workspaces(
        harness: Harness,
        database: PgConnectOptions,
        entries: &[WorkspaceEntry],
        any_secret: Option<&str>,
        settings: &[(&str, &str)],
    ) -> E2e {
        let access = Access::Workspaces {
            file: Arc::new(WorkspacesFile::write(entries)),
            any_secret: any_secret.map(str::to_owned),
        };
        E2e::start_as(harness, database, access, settings).await
    }

    async fn start_as(harness: Harness, database: PgConnectOptions, access: Access, settings: &[(&str, &str)]) -> E2e {
        let db = PgPoolOptions::new().max_connections(2).connect_with(database.clone()).await.expect("test pool");
        let since = db_now(&db).await;
        let database = test_kit::database_url(&database);
        let settings: Vec<(String, String)> =
            settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let service = start_service(&database, &harness.info, &access, &settings).await;
        let e2e = E2e { service, harness, db, http: reqwest::Client::new(), database, settings, access };
        if !e2e.catch_up_off() {
            e2e.start_up_catch_up(since).await;
        }
        e2e
    }

    fn catch_up_off(&self) -> bool {
        self.settings.iter().any(|(k, v)| k == "APP_CATCH_UP__INTERVAL_SECONDS" && v == "0")
    }

    /// Stops the service gracefully and starts it again with `api_key` (what an
    /// operator does after fixing SEAM_API_KEY). The database and the fake stay.
    pub async fn restart_with_key(self, api_key: &str) -> E2e {
        let webhook_secret = self.harness.info.webhook_secret.clone();
        self.restart_as(Access::Key { api_key: api_key.to_owned(), webhook_secret }).await
    }

    /// Stops the service gracefully and starts it again with a workspaces file of
    /// `entries` (what an operator does after adding a workspace); `SEAM_WEBHOOK_SECRET`
    /// as before. The database and the fake stay.
    pub async fn restart_with_workspaces(self, entries: &[WorkspaceEntry]) -> E2e {
        let any_secret = match &self.access {
            Access::Workspaces { any_secret, .. } => any_secret.clone(),
            Access::Key { webhook_secret, .. } => Some(webhook_secret.clone()),
        };
        self.restart_as(Access::Workspaces { file: Arc::new(WorkspacesFile::write(entries)), any_secret }).await
    }

    async fn restart_as(self, access: Access) -> E2e {
        let E2e { service, harness, db, http, database, settings, .. } = self;
        stop_service(service).await;
        let since = db_now(&db).await;
        let service = start_service(&database, &harness.info, &access, &settings).await;
        let e2e = E2e { service, harness, db, http, database, settings, access };
        if !e2e.catch_up_off() {
            e2e.start_up_catch_up(since).await;
        }
        e2e
    }

    /// SIGKILLs the service (no shutdown: a call in flight is abandoned, claims stay
    /// taken until their lease ends) and starts it again, same settings, same database.
    pub async fn kill_and_relaunch(&mut self) {
        self.service.sigkill();
        self.service.launch().await.unwrap_or_else(|e| panic!("the service did not start again: {e:#}"));
    }

    /// Waits for the catch-up run the service makes when it starts (it reads Seam's
    /// `/events/list`). Until it has run, an event a test records in the fake could
    /// reach the service from the log before its webhook does.
    async fn start_up_catch_up(&self, since: DateTime<Utc>) {
        eventually("the start-up catch-up run (catch_up_state.last_run_at)", || async {
            // One row per workspace: the one run last.
            let state: Option<Value> = sqlx::query_scalar(
                "SELECT to_jsonb(c) FROM catch_up_state c ORDER BY last_run_at DESC NULLS LAST LIMIT 1",
            )
            .fetch_optional(&self.db)
            .await
            .expect("read catch_up_state");
            match state.as_ref().map(|s| &s["last_run_at"]) {
                Some(Value::String(at)) if time(&json!(at)) >= since => Ok(()),
                _ => Err(format!("{state:?}")),
            }
        })
        .await;
    }

    /// Ends the test cleanly: the service stops, every pool closes, the harness exits;
    /// then fails the test if any Seam call the service made (or its answer) broke
    /// Seam's OpenAPI document (the harness's front checked each one).
    pub async fn finish(self) {
        let E2e { service, harness, db, .. } = self;
        stop_service(service).await;
        db.close().await;
        let report = harness.contract_report().await;
        drop(harness);
        eprintln!(
            "contract: {} Seam call(s) checked against Seam's OpenAPI document, {} violation(s); notes: {}",
            report["requests_checked"],
            report["violation_count"],
            report["notes"]
                .as_array()
                .map(|notes| notes
                    .iter()
                    .map(|n| format!("{} (×{})", n["text"].as_str().unwrap_or("?"), n["count"]))
                    .collect::<Vec<_>>()
                    .join("; "))
                .unwrap_or_default()
        );
        if let Err(violations) = contract_verdict(&report) {
            panic!("{violations}");
        }
    }

    /// Delivers `event` to the service, signed like Svix; asserts it was accepted.
    pub async fn deliver(&self, event: &Value) -> Delivery {
        let delivery = self.harness.deliver(&self.service.webhook(), event).await;
        assert_eq!(delivery.status, 200, "the service refused {}: {:?}", event["event_type"], delivery.body);
        assert_eq!(delivery.body["status"], "accepted", "{delivery:?}");
        delivery
    }

    /// Delivers `event` signed with `secret` (a workspace's endpoint secret, or one
    /// that verifies any workspace); returns the service's answer, whatever it is.
    pub async fn deliver_signed(&self, event: &Value, secret: &str) -> Delivery {
        self.harness.deliver_with(&self.service.webhook(), json!({ "event": event, "secret": secret })).await
    }

    /// The same, asserting it was accepted.
    pub async fn deliver_as(&self, event: &Value, secret: &str) -> Delivery {
        let delivery = self.deliver_signed(event, secret).await;
        assert_eq!(delivery.status, 200, "the service refused {}: {:?}", event["event_type"], delivery.body);
        assert_eq!(delivery.body["status"], "accepted", "{delivery:?}");
        delivery
    }

    /// One step of a code's life: patch the fake (unless `patch` is null), record
    /// `event_type`, deliver it, and wait until the service has applied the fetch it
    /// caused. Returns the mirror row.
    pub async fn step(&self, access_code_id: &str, patch: Value, event_type: &str, event_extra: Value) -> MirrorRow {
        if !patch.is_null() {
            self.harness.set_state(access_code_id, patch).await;
        }
        let event = self.harness.event(event_type, access_code_id, event_extra).await;
        self.deliver(&event).await;
        self.applied(access_code_id, &event).await
    }

    /// Waits until the mirror row for `access_code_id` reflects a fetch made for
    /// `event` (the mirror names the newest event it has applied).
    pub async fn applied(&self, access_code_id: &str, event: &Value) -> MirrorRow {
        let event_id = event["event_id"].as_str().expect("event_id").to_owned();
        let what = format!("the mirror of {access_code_id} to apply {} ({event_id})", event["event_type"]);
        eventually(&what, || async {
            match self.mirror(access_code_id).await {
                Some(row) if row.last_event_id.as_deref() == Some(event_id.as_str()) => Ok(row),
                other => Err(format!("{other:?}; queue: {:?}", self.queue_row(access_code_id).await)),
            }
        })
        .await
    }

    /// Waits until no re-fetch of `access_code_id` is pending and the mirror has it.
    pub async fn settled(&self, access_code_id: &str) -> MirrorRow {
        eventually(&format!("the re-fetch queue to finish {access_code_id}"), || async {
            let queued = self.queue_row(access_code_id).await;
            match (queued, self.mirror(access_code_id).await) {
                (None, Some(row)) => Ok(row),
                (queued, row) => Err(format!("queue: {queued:?}; mirror: {row:?}")),
            }
        })
        .await
    }

    pub async fn mirror(&self, access_code_id: &str) -> Option<MirrorRow> {
        sqlx::query_as(
            "SELECT access_code_id, device_id, workspace_id, name, type, status, is_managed, starts_at, ends_at,
                    warnings, errors, code, access_code, deleted_at, last_event_id, last_event_type,
                    last_event_occurred_at, fetched_at
             FROM access_codes WHERE access_code_id = $1",
        )
        .bind(access_code_id)
        .fetch_optional(&self.db)
        .await
        .expect("read the mirror")
    }

    /// The pending re-fetch of a code, as JSON (None when there is none).
    pub async fn queue_row(&self, access_code_id: &str) -> Option<Value> {
        sqlx::query_scalar("SELECT to_jsonb(r) - 'claim_token' FROM access_code_refetches r WHERE access_code_id = $1")
            .bind(access_code_id)
            .fetch_optional(&self.db)
            .await
            .expect("read the queue")
    }

    /// The code's history, oldest first.
    pub async fn history(&self, access_code_id: &str) -> Vec<Step> {
        #[derive(sqlx::FromRow)]
        struct HistoryRow {
            change: String,
            previous_status: Option<String>,
            status: Option<String>,
            warnings: Json<Value>,
            errors: Json<Value>,
            event_type: Option<String>,
        }
        let rows: Vec<HistoryRow> = sqlx::query_as(
            "SELECT change, previous_status, status, warnings, errors, event_type
             FROM access_code_history WHERE access_code_id = $1 ORDER BY id",
        )
        .bind(access_code_id)
        .fetch_all(&self.db)
        .await
        .expect("read the history");
        rows.into_iter()
            .map(|row| Step {
                change: row.change,
                previous_status: row.previous_status,
                status: row.status,
                warnings: codes(&row.warnings.0, "warning_code"),
                errors: codes(&row.errors.0, "error_code"),
                event_type: row.event_type,
            })
            .collect()
    }

    /// `seam_events` rows for a code: `(event_id, delivery_id, event_type)`, by occurrence.
    pub async fn stored_events(&self, access_code_id: &str) -> Vec<(String, Option<String>, String)> {
        sqlx::query_as(
            "SELECT event_id, delivery_id, event_type FROM seam_events
             WHERE access_code_id = $1 ORDER BY occurred_at, received_at",
        )
        .bind(access_code_id)
        .fetch_all(&self.db)
        .await
        .expect("read seam_events")
    }

    /// `GET /readyz` as an operator (with a read-API token, so failures come with
    /// their reason): status and body.
    pub async fn readyz(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.service.url()))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("GET /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.expect("readyz JSON"))
    }
}

impl E2e {
    /// `GET /metrics` (the Prometheus text).
    pub async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.service.url())).send().await.expect("GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// Rows in `table` (one of the service's tables, named by the test).
    pub async fn count(&self, table: &'static str) -> i64 {
        assert!(table.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "not a table name: {table}");
        let sql = format!("SELECT count(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.db).await.expect("count rows")
    }
}

/// The read-API token the service is started with.
pub const OPERATOR_TOKEN: &str = "e2e-operator-token-0123456789abcdef";

/// The database's clock.
async fn db_now(db: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()").fetch_one(db).await.expect("SELECT now()")
}

/// Parses a Seam time.
pub fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}")))
        .unwrap_or_else(|e| panic!("not a time ({e}): {value}"))
        .with_timezone(&Utc)
}

/// Seam's time format (milliseconds, `Z`).
pub fn seam_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
