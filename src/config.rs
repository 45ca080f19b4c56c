//! Settings: `config/base.toml` (compiled in), then `config/{APP_ENVIRONMENT}.toml`,
//! then `APP_*` environment variables (`APP_WORKER__CONCURRENCY=4`), then the names
//! Seam users expect (`DATABASE_URL`, `SEAM_API_KEY`, …), which win.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

use crate::seam::credential::Credential;
use crate::seam::signature::WebhookSecrets;

const BASE: &str = include_str!("../config/base.toml");

/// Smallest `seam.max_response_bytes`: below this even an error answer does not fit.
const MIN_SEAM_RESPONSE_BYTES: usize = 1024;

/// Environment variables Seam users expect, and the setting each one sets.
const SEAM_ENV_NAMES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("SEAM_API_KEY", "seam.api_key"),
    ("SEAM_WEBHOOK_SECRET", "webhook.secret"),
    ("SEAM_API_URL", "seam.api_url"),
    ("LISTEN_ADDR", "server.listen_addr"),
    ("API_TOKEN", "api.tokens"),
];

/// A TOML or JSON file holding `workspaces = [...]` (a secret store's mount, say).
const WORKSPACES_FILE_ENV: &str = "SEAM_WORKSPACES_FILE";

/// Shortest `sweep.settled_interval_seconds` other than 0 (off).
pub const MIN_SETTLED_INTERVAL_SECONDS: u64 = 600;

/// Shortest webhook secret accepted, in bytes after decoding.
pub const MIN_SECRET_BYTES: usize = 24;
/// Shortest read-API token accepted, in characters.
pub const MIN_API_TOKEN_CHARS: usize = 32;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `APP_ENVIRONMENT` (`local` when unset; `test` for `from_toml`).
    #[serde(skip)]
    pub environment: String,
    pub store_pins: bool,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub webhook: WebhookSettings,
    pub seam: SeamSettings,
    pub worker: WorkerSettings,
    pub catch_up: CatchUpSettings,
    pub import: ImportSettings,
    pub sweep: SweepSettings,
    pub backup: BackupSettings,
    pub api: ApiSettings,
    pub console: ConsoleSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    /// `[[workspaces]]`: one entry per Seam workspace (also from `SEAM_WORKSPACES_FILE`).
    #[serde(default)]
    pub workspaces: Vec<WorkspaceSettings>,
}

/// One Seam workspace the service serves: the credential to call Seam with and the
/// secret(s) of the workspace's webhook endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettings {
    /// A label for logs and `status` (default: the workspace id, once known).
    #[serde(default)]
    pub name: Option<String>,
    /// Required with a personal access token; with an API key, optional and checked
    /// against what Seam says the key belongs to.
    #[serde(default)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub personal_access_token: Option<SecretString>,
    /// The `whsec_…` secret(s) of this workspace's endpoint: they verify this
    /// workspace's events only.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
}

/// A configured workspace, checked: its credential and its endpoint's secrets.
#[derive(Debug, Clone)]
pub struct WorkspaceEntry {
    /// `name`, or where it came from (`SEAM_API_KEY`, `workspaces[2]`).
    pub label: String,
    pub workspace_id: Option<String>,
    pub credential: Credential,
    pub secrets: WebhookSecrets,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatchUpSettings {
    pub interval_seconds: u64,
    pub overlap_seconds: u64,
    pub initial_lookback_hours: u64,
    pub page_limit: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImportSettings {
    /// Import every device's codes when the worker starts, if the mirror is empty and
    /// no import has finished; resume an import cut short. Env: `APP_IMPORT__ON_START`.
    pub on_start: bool,
    /// Items asked for per list call (devices, codes of a device).
    pub page_limit: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SweepSettings {
    pub interval_seconds: u64,
    pub stuck_after_seconds: u64,
    pub stuck_max_interval_seconds: u64,
    pub time_bound_grace_seconds: u64,
    /// Every code that exists and is not stuck is re-fetched once its last fetch is
    /// this old, a few each sweep (0: off).
    pub settled_interval_seconds: u64,
}

/// Backup access codes (README "Backup access codes").
#[derive(Debug, Clone, Deserialize)]
pub struct BackupSettings {
    /// Pull a backup code, once, for a time-bound code that fails to program or is
    /// not set `pull_after_seconds` after its `starts_at`. Env: `APP_BACKUP__PULL_ON_FAILURE`.
    pub pull_on_failure: bool,
    pub pull_after_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiSettings {
    pub tokens: SecretString,
    pub max_page_size: u32,
    /// Change streams open at once in this process (`GET /v1/changes`, `/console/changes`).
    pub max_change_streams: usize,
}

/// The operator console (`/console`), on whenever `api.tokens` is set.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsoleSettings {
    pub session_minutes: u32,
    pub secure_cookie: SecureCookie,
}

/// When the console's session cookie carries `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookie {
    /// When the request came over HTTPS (`X-Forwarded-Proto: https`).
    Auto,
    Always,
    Never,
}

impl ConsoleSettings {
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.session_minutes) * 60)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    pub events_days: u32,
    pub prune_interval_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    All,
    Server,
    Worker,
}

impl RunMode {
    pub fn runs_endpoint(self) -> bool {
        matches!(self, RunMode::All | RunMode::Server)
    }
    pub fn runs_worker(self) -> bool {
        matches!(self, RunMode::All | RunMode::Worker)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub listen_addr: String,
    pub run_mode: RunMode,
    pub max_body_bytes: usize,
    pub body_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub retry_after_seconds: u32,
    pub intake_writers: usize,
    pub intake_max_batch: usize,
    /// Threads of the async runtime: 1 runs every task on one thread; 0, one per CPU.
    pub runtime_threads: usize,
    pub header_read_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub shutdown_deadline_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub create_if_missing: bool,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub secret: SecretString,
    pub tolerance_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeamSettings {
    pub api_url: String,
    pub api_key: SecretString,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    /// Largest answer read from Seam; a larger one is dropped unread (a transient failure).
    pub max_response_bytes: usize,
    /// The circuit breaker shared by every call (`seam::breaker`).
    pub breaker: BreakerSettings,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// The first wait before a probe; doubled after each failed probe.
    pub open_ms: u64,
    /// The longest wait between probes.
    pub max_open_ms: u64,
    /// How long calls take to ramp up to full pace after a probe is answered.
    pub ramp_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub max_requests_per_second: u32,
    pub poll_interval_ms: u64,
    pub lease_seconds: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub max_attempts: i32,
    pub auth_failure_retry_seconds: u64,
    /// A code asked for again while it was being fetched is fetched again this
    /// long after the fetch ends (not at once), so a burst costs two calls.
    pub requested_again_delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

impl Settings {
    /// Loads settings from the compiled-in base, the environment's file and the
    /// process environment.
    pub fn load() -> anyhow::Result<Settings> {
        let environment = std::env::var("APP_ENVIRONMENT").unwrap_or_else(|_| "local".into());
        if !environment.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("APP_ENVIRONMENT must be a plain name like `local` or `production`");
        }
        let dir = PathBuf::from(std::env::var("APP_CONFIG_DIR").unwrap_or_else(|_| "config".into()));
        let file = dir.join(format!("{environment}.toml"));
        if environment != "local" && !file.exists() {
            bail!("APP_ENVIRONMENT={environment} but {} does not exist", file.display());
        }
        let mut figment = Figment::from(Toml::string(BASE))
            .merge(Toml::file(file))
            .merge(Env::prefixed("APP_").split("__").ignore(&["environment", "config_dir"]))
            .merge(seam_env());
        if let Ok(path) = std::env::var(WORKSPACES_FILE_ENV) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("{WORKSPACES_FILE_ENV}={} is not a readable file", path.display());
            }
            figment = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => figment.merge(figment::providers::Json::file(path)),
                _ => figment.merge(Toml::file(path)),
            };
        }
        let mut settings = Self::from_figment(figment)?;
        settings.environment = environment;
        Ok(settings)
    }

    /// The compiled-in defaults with TOML `layers` on top, later ones winning: for
    /// tests and tools.
    pub fn from_toml(layers: &[&str]) -> anyhow::Result<Settings> {
        let figment = layers.iter().fold(Figment::from(Toml::string(BASE)), |f, layer| f.merge(Toml::string(layer)));
        let mut settings = Self::from_figment(figment)?;
        settings.environment = "test".into();
        Ok(settings)
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Settings> {
        let settings: Settings = figment.extract().map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.database.connect_options()?;
        if self.worker.concurrency == 0 {
            bail!("worker.concurrency must be at least 1");
        }
        if self.worker.backoff_base_ms == 0 || self.worker.backoff_max_ms < self.worker.backoff_base_ms {
            bail!("worker backoff bounds must satisfy 0 < backoff_base_ms <= backoff_max_ms");
        }
        if self.worker.lease_seconds * 1000 <= self.seam.timeout_ms {
            bail!("worker.lease_seconds must be longer than seam.timeout_ms, or a slow fetch loses its claim");
        }
        if self.retention.events_days == 1 {
            bail!("retention.events_days must be 0 (keep) or at least 2: Svix retries for about 28 hours");
        }
        if self.seam.breaker.failures == 0 || self.seam.breaker.open_ms == 0 {
            bail!("seam.breaker.failures and seam.breaker.open_ms must be at least 1");
        }
        if self.seam.max_response_bytes < MIN_SEAM_RESPONSE_BYTES {
            bail!("seam.max_response_bytes must be at least {MIN_SEAM_RESPONSE_BYTES}");
        }
        if self.sweep.settled_interval_seconds != 0
            && self.sweep.settled_interval_seconds < MIN_SETTLED_INTERVAL_SECONDS
        {
            bail!(
                "sweep.settled_interval_seconds must be 0 (off) or at least {MIN_SETTLED_INTERVAL_SECONDS}: \
                 re-fetching every code more often is a stream of calls, not a safety net"
            );
        }
        if self.catch_up.page_limit == 0 {
            bail!("catch_up.page_limit must be at least 1");
        }
        if self.import.page_limit == 0 {
            bail!("import.page_limit must be at least 1");
        }
        if self.api.max_page_size == 0 {
            bail!("api.max_page_size must be at least 1");
        }
        if self.api.max_change_streams == 0 {
            bail!("api.max_change_streams must be at least 1");
        }
        if !(1..=7 * 24 * 60).contains(&self.console.session_minutes) {
            bail!("console.session_minutes must be 1 to 10080 (a week)");
        }
        if let Some(short) =
            self.api_tokens().iter().map(|t| t.chars().count()).filter(|n| *n < MIN_API_TOKEN_CHARS).min()
        {
            bail!(
                "API_TOKEN is weak: a token of {short} characters, fewer than {MIN_API_TOKEN_CHARS}; \
                 make one with `openssl rand -hex 32`"
            );
        }
        Ok(())
    }

    /// The read API's bearer tokens; empty when the read API is off. Each is at
    /// least `MIN_API_TOKEN_CHARS` long (checked at load).
    pub fn api_tokens(&self) -> Vec<String> {
        self.api
            .tokens
            .expose_secret()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Fail closed: the secrets the chosen run mode needs must be present and well
    /// formed. `serve` calls this; `migrate` needs no secrets.
    pub fn check_secrets(&self) -> anyhow::Result<()> {
        let entries = self.workspace_entries()?;
        if self.server.run_mode.runs_endpoint() {
            self.webhook_secrets()?;
        }
        if self.server.run_mode.runs_worker() {
            self.check_seam_credentials(&entries)?;
        }
        Ok(())
    }

    /// A Seam credential and URL, for whatever calls Seam (the worker, `import`).
    pub fn check_seam_key(&self) -> anyhow::Result<()> {
        self.check_seam_credentials(&self.workspace_entries()?)
    }

    fn check_seam_credentials(&self, entries: &[WorkspaceEntry]) -> anyhow::Result<()> {
        if entries.is_empty() {
            bail!(
                "SEAM_API_KEY is not set and no [[workspaces]] are configured (the worker needs a credential; \
                 run_mode = \"server\" runs without one)"
            );
        }
        reqwest::Url::parse(&self.seam.api_url).context("SEAM_API_URL is not a URL")?;
        Ok(())
    }

    /// Every workspace the service serves, checked: `SEAM_API_KEY` (if set) first,
    /// then each `[[workspaces]]` entry. Refused, naming the entry: a credential of a
    /// kind the service cannot use, an entry with both or neither credential, a
    /// weak secret, or two entries naming one workspace.
    pub fn workspace_entries(&self) -> anyhow::Result<Vec<WorkspaceEntry>> {
        let mut entries = Vec::new();
        if !self.seam.api_key.expose_secret().trim().is_empty() {
            let credential =
                Credential::parse(&self.seam.api_key, None).map_err(|e| anyhow::anyhow!("SEAM_API_KEY {e}"))?;
            entries.push(WorkspaceEntry {
                label: "SEAM_API_KEY".into(),
                workspace_id: None,
                credential,
                secrets: WebhookSecrets::none(),
            });
        }
        for (i, workspace) in self.workspaces.iter().enumerate() {
            let label = workspace.name.clone().unwrap_or_else(|| format!("workspaces[{i}]"));
            let workspace_id = workspace.workspace_id.clone().filter(|w| !w.trim().is_empty());
            let secret = match (&workspace.api_key, &workspace.personal_access_token) {
                (Some(key), None) => key,
                (None, Some(token)) => token,
                _ => bail!("{label}: set exactly one of api_key and personal_access_token"),
            };
            let credential = Credential::parse(secret, workspace_id.as_deref())
                .map_err(|e| anyhow::anyhow!("{label}: the credential {e}"))?;
            let secrets = match &workspace.webhook_secret {
                Some(secret) if !secret.expose_secret().trim().is_empty() => {
                    self.checked_secrets(secret, &format!("{label}: webhook_secret"))?
                }
                _ => WebhookSecrets::none(),
            };
            if let Some(id) = &workspace_id
                && entries.iter().any(|e: &WorkspaceEntry| e.workspace_id.as_ref() == Some(id))
            {
                bail!("{label}: workspace {id} is configured twice");
            }
            entries.push(WorkspaceEntry { label, workspace_id, credential, secrets });
        }
        Ok(entries)
    }

    /// The webhook secrets, refused when one is weak: under
    /// `MIN_SECRET_BYTES` after decoding (Svix issues 24 or more), or the secret
    /// published with the Standard Webhooks test vectors in production.
    /// The unscoped secrets (`SEAM_WEBHOOK_SECRET`, verifying any workspace's
    /// events); refused when there are none and no `[[workspaces]]` entry has one.
    pub fn webhook_secrets(&self) -> anyhow::Result<WebhookSecrets> {
        let any_scoped = self.workspaces.iter().any(|w| w.webhook_secret.is_some());
        if any_scoped && self.webhook.secret.expose_secret().trim().is_empty() {
            return Ok(WebhookSecrets::none());
        }
        self.checked_secrets(&self.webhook.secret, "SEAM_WEBHOOK_SECRET")
    }

    /// `list` parsed, refused when one secret is weak: under `MIN_SECRET_BYTES`
    /// after decoding (Svix issues 24 or more), or the secret published with the
    /// Standard Webhooks test vectors in production.
    fn checked_secrets(&self, list: &SecretString, name: &str) -> anyhow::Result<WebhookSecrets> {
        let secrets = WebhookSecrets::parse(list.expose_secret()).map_err(|e| anyhow::anyhow!("{name} is {e}"))?;
        if let Some((number, bytes)) = secrets.shortest().filter(|(_, bytes)| *bytes < MIN_SECRET_BYTES) {
            bail!(
                "{name} is weak: secret #{number} is {bytes} bytes after decoding, fewer than \
                 {MIN_SECRET_BYTES}; use the whsec_ secret Seam shows for the endpoint"
            );
        }
        if secrets.includes_public_test_secret() && self.environment == "production" {
            bail!(
                "{name} holds the public Standard Webhooks test-vector secret, which anyone can sign \
                 with; refused with APP_ENVIRONMENT=production"
            );
        }
        Ok(secrets)
    }

    /// What is allowed but unwise, for a loud line at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.server.run_mode.runs_endpoint()
            && WebhookSecrets::parse(self.webhook.secret.expose_secret())
                .is_ok_and(|secrets| secrets.includes_public_test_secret())
        {
            warnings.push(
                "SEAM_WEBHOOK_SECRET holds the PUBLIC test-vector secret: anyone can forge webhooks; \
                 never use it outside tests"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// `DATABASE_URL` and friends, mapped onto their settings.
fn seam_env() -> Env {
    Env::raw()
        .only(&SEAM_ENV_NAMES.iter().map(|(name, _)| *name).collect::<Vec<_>>())
        .map(|key| {
            SEAM_ENV_NAMES
                .iter()
                .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
                .map(|(_, path)| (*path).into())
                .unwrap_or_else(|| key.into())
        })
        .split(".")
}

impl DatabaseSettings {
    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        let url = self.url.expose_secret();
        let unusable = || anyhow::anyhow!("DATABASE_URL is not a usable postgres:// URL");
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(unusable());
        }
        PgConnectOptions::from_str(url).map_err(|_| unusable())
    }
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

impl ServerSettings {
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl SeamSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl BreakerSettings {
    pub fn open(&self) -> Duration {
        Duration::from_millis(self.open_ms)
    }
    pub fn max_open(&self) -> Duration {
        Duration::from_millis(self.max_open_ms.max(self.open_ms))
    }
    pub fn ramp(&self) -> Duration {
        Duration::from_millis(self.ramp_ms)
    }
}

impl WorkerSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn requested_again_delay(&self) -> Duration {
        Duration::from_millis(self.requested_again_delay_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        [webhook]
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [seam]
        api_key = "seam_test_key"
    "#;

    fn checked(toml: &str) -> anyhow::Result<Settings> {
        let settings = Settings::from_toml(&[toml])?;
        settings.check_secrets()?;
        Ok(settings)
    }

    #[test]
    fn base_with_secrets_is_valid() {
        let settings = checked(VALID).unwrap();
        assert_eq!(settings.worker.concurrency, 8);
        assert_eq!(settings.server.max_body_bytes, 256 * 1024);
        assert_eq!(settings.webhook.tolerance_seconds, 300);
        assert_eq!(settings.seam.max_response_bytes, 1024 * 1024);
    }

    #[test]
    fn a_seam_answer_limit_too_small_for_any_answer_refuses_to_start() {
        let err = Settings::from_toml(&[VALID, "[seam]\nmax_response_bytes = 100"]).unwrap_err();
        assert!(err.to_string().contains("seam.max_response_bytes"), "{err}");
        let settings = Settings::from_toml(&[VALID, "[seam]\nmax_response_bytes = 4096"]).unwrap();
        assert_eq!(settings.seam.max_response_bytes, 4096);
    }

    #[test]
    fn the_settled_sweep_is_off_or_at_least_ten_minutes_apart() {
        assert_eq!(checked(VALID).unwrap().sweep.settled_interval_seconds, 6 * 3600);
        for (value, accepted) in [(0, true), (1, false), (599, false), (600, true), (86_400, true)] {
            let result = Settings::from_toml(&[VALID, &format!("[sweep]\nsettled_interval_seconds = {value}")]);
            assert_eq!(result.is_ok(), accepted, "{value}: {:?}", result.err());
            if let Err(e) = result {
                assert!(e.to_string().contains("sweep.settled_interval_seconds"), "{e}");
            }
        }
    }

    #[test]
    fn the_import_runs_on_start_unless_turned_off() {
        let settings = Settings::from_toml(&[VALID]).unwrap();
        assert!(settings.import.on_start);
        assert_eq!(settings.import.page_limit, 500);
        let off = Settings::from_toml(&[VALID, "[import]\non_start = false"]).unwrap();
        assert!(!off.import.on_start);
        let err = Settings::from_toml(&[VALID, "[import]\npage_limit = 0"]).unwrap_err();
        assert!(err.to_string().contains("import.page_limit"), "{err}");
    }

    #[test]
    fn a_missing_webhook_secret_refuses_to_start() {
        let err = checked("[seam]\napi_key = \"seam_x\"").unwrap_err();
        assert!(err.to_string().contains("SEAM_WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn a_malformed_webhook_secret_refuses_to_start() {
        let err = checked("[webhook]\nsecret = \"whsec_not base64!\"\n[seam]\napi_key = \"seam_x\"").unwrap_err();
        assert!(err.to_string().contains("SEAM_WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn the_worker_refuses_to_start_without_an_api_key() {
        let err = checked("[webhook]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"").unwrap_err();
        assert!(err.to_string().contains("SEAM_API_KEY"), "{err}");
        let settings =
            checked("[server]\nrun_mode = \"server\"\n[webhook]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"");
        assert!(settings.is_ok(), "the endpoint alone needs no API key");
    }

    #[test]
    fn an_unusable_database_url_refuses_to_start() {
        let err = Settings::from_toml(&[VALID, "[database]\nurl = \"mysql://nope\""]).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let settings = Settings::from_toml(&[VALID]).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert!(!debug.contains("seam_test_key"));
    }

    #[test]
    fn weak_secrets_and_tokens_refuse_to_start() {
        for (secret, why) in
            [("test", "3 bytes"), ("whsec_AA==", "1 bytes"), ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La", "21 bytes")]
        {
            let toml = format!("[webhook]\nsecret = \"{secret}\"\n[seam]\napi_key = \"seam_x\"");
            let err = checked(&toml).unwrap_err().to_string();
            assert!(err.contains("weak") && err.contains(why), "{secret}: {err}");
        }
        // A rotation pair is as strong as its weakest secret.
        let toml =
            "[webhook]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_AA==\"\n[seam]\napi_key = \"seam_x\"";
        assert!(checked(toml).unwrap_err().to_string().contains("secret #2"));
        for token in ["a", "read-token-1", &"x".repeat(31)] {
            let err = Settings::from_toml(&[VALID, &format!("[api]\ntokens = \"{token}\"")]).unwrap_err();
            assert!(err.to_string().contains("API_TOKEN is weak"), "{token}: {err}");
        }
        assert!(Settings::from_toml(&[VALID, &format!("[api]\ntokens = \"{}\"", "x".repeat(32))]).is_ok());
    }

    #[test]
    fn console_sessions_and_streams_are_bounded() {
        let settings = Settings::from_toml(&[VALID]).unwrap();
        assert_eq!(settings.console.session_lifetime(), Duration::from_secs(8 * 3600));
        assert_eq!(settings.console.secure_cookie, SecureCookie::Auto);
        assert_eq!(settings.api.max_change_streams, 64);
        for (toml, setting) in [
            ("[console]\nsession_minutes = 0", "console.session_minutes"),
            ("[console]\nsession_minutes = 10081", "console.session_minutes"),
            ("[api]\nmax_change_streams = 0", "api.max_change_streams"),
        ] {
            let err = Settings::from_toml(&[VALID, toml]).unwrap_err();
            assert!(err.to_string().contains(setting), "{toml}: {err}");
        }
        let err = Settings::from_toml(&[VALID, "[console]\nsecure_cookie = \"sometimes\""]).unwrap_err();
        assert!(err.to_string().contains("secure_cookie"), "{err}");
    }

    #[test]
    fn the_public_test_vector_secret_warns_and_is_refused_in_production() {
        let mut settings = checked(VALID).expect("allowed outside production");
        assert_eq!(settings.warnings().len(), 1, "with a loud warning");
        settings.environment = "production".into();
        let err = settings.check_secrets().unwrap_err().to_string();
        assert!(err.contains("public"), "{err}");
        let own = "[webhook]\nsecret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n[seam]\napi_key = \"seam_x\"";
        let mut settings = checked(own).unwrap();
        assert!(settings.warnings().is_empty());
        settings.environment = "production".into();
        assert!(settings.check_secrets().is_ok());
    }

    #[test]
    fn workspaces_are_checked_entry_by_entry() {
        let entries = |toml: &str| Settings::from_toml(&[VALID, toml]).unwrap().workspace_entries();
        let ok = entries(
            "[[workspaces]]\nname = \"A\"\napi_key = \"seam_key_a\"\nwebhook_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n\
             [[workspaces]]\nworkspace_id = \"ws_b\"\npersonal_access_token = \"seam_at1_b\"",
        )
        .unwrap();
        let labels: Vec<&str> = ok.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["SEAM_API_KEY", "A", "workspaces[1]"]);
        assert_eq!(ok[2].credential.kind(), "personal_access_token");
        assert_eq!(ok[1].secrets.shortest().map(|(n, _)| n), Some(1));
        let refused = [
            ("[[workspaces]]\napi_key = \"seam_cst1_x\"", "client session token"),
            ("[[workspaces]]\napi_key = \"seam_pk1_x\"", "publishable key"),
            ("[[workspaces]]\npersonal_access_token = \"seam_at1_x\"", "without a workspace_id"),
            (
                "[[workspaces]]\nname = \"Both\"\napi_key = \"seam_a\"\npersonal_access_token = \"seam_at1\"",
                "Both: set exactly one",
            ),
            ("[[workspaces]]\nworkspace_id = \"w\"", "set exactly one"),
            ("[[workspaces]]\napi_key = \"sk_live_x\"", "not a Seam credential"),
            ("[[workspaces]]\napi_key = \"seam_a\"\nwebhook_secret = \"whsec_AA==\"", "webhook_secret is weak"),
            (
                "[[workspaces]]\nworkspace_id = \"w\"\napi_key = \"seam_a\"\n[[workspaces]]\nworkspace_id = \"w\"\napi_key = \"seam_b\"",
                "configured twice",
            ),
        ];
        for (toml, reason) in refused {
            let error = entries(toml).unwrap_err().to_string();
            assert!(error.contains(reason), "{toml}: {error}");
            assert!(!error.contains("seam_cst1_x") && !error.contains("seam_pk1_x"), "no credential in {error}");
        }
    }

    #[test]
    fn workspace_secrets_alone_are_enough_for_the_endpoint() {
        let toml = "[webhook]\nsecret = \"\"\n[seam]\napi_key = \"\"\n[[workspaces]]\napi_key = \"seam_a\"\n\
                    webhook_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"";
        let settings = Settings::from_toml(&[toml]).unwrap();
        settings.check_secrets().expect("a workspace secret and a workspace key");
        assert!(settings.webhook_secrets().unwrap().shortest().is_none(), "no unscoped secret");
        let neither = Settings::from_toml(&[
            "[webhook]\nsecret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n[seam]\napi_key = \"\"",
        ])
        .unwrap();
        assert!(neither.check_secrets().unwrap_err().to_string().contains("no [[workspaces]]"));
    }
}
