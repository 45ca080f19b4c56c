//! The service under test: the real `seam-access-sync` binary as a child process,
//! configured by environment variables, so it can be SIGKILLed and SIGTERMed. It
//! binds port 0 and the kit reads the port it chose from its
//! "seam-access-sync listening" log line; a restart binds that port again, so
//! whoever sends to it keeps its URL. Its output is captured ([`Service::logs`]),
//! and also goes to a file or the test's output when the config says so. Killed on
//! drop.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::logs::LogBuffer;
use crate::process::{Output, Process};

/// How long a start may take before it counts as failed.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// The line the service logs once it listens, with `addr`.
const LISTENING: &str = "seam-access-sync listening";

/// How to run the service: its binary, database, Seam, secrets and settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `env!("CARGO_BIN_EXE_seam-access-sync")` of the suite.
    pub bin: PathBuf,
    pub db_url: String,
    pub seam_url: String,
    pub api_key: String,
    pub webhook_secret: String,
    /// `APP_*` settings, on top of nothing else: inherited `APP_*` variables are removed.
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` of the service (the kit adds what it needs to read the port).
    pub log_filter: String,
    pub output: Output,
}

impl ServiceConfig {
    /// The service with the kit's secret, a test key and warnings-only logs.
    pub fn new(bin: impl Into<PathBuf>, db_url: &str, seam_url: &str) -> ServiceConfig {
        ServiceConfig {
            bin: bin.into(),
            db_url: db_url.to_owned(),
            seam_url: seam_url.to_owned(),
            api_key: "seam_test_key".to_owned(),
            webhook_secret: crate::SECRET.to_owned(),
            // The import on start is driven by its own tests.
            env: vec![
                ("APP_LOG__FORMAT".to_owned(), "text".to_owned()),
                ("APP_IMPORT__ON_START".to_owned(), "false".to_owned()),
            ],
            log_filter: "warn".to_owned(),
            output: Output::default(),
        }
    }

    /// Sets an environment variable (`APP_WORKER__CONCURRENCY`, …), replacing an
    /// earlier value.
    pub fn env(mut self, key: &str, value: impl ToString) -> ServiceConfig {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// `server.run_mode`: "all" (the default), "server" (the webhook endpoint only)
    /// or "worker".
    pub fn run_mode(self, mode: &str) -> ServiceConfig {
        self.env("APP_SERVER__RUN_MODE", mode)
    }

    pub fn api_key(mut self, api_key: &str) -> ServiceConfig {
        self.api_key = api_key.to_owned();
        self
    }

    pub fn webhook_secret(mut self, secret: &str) -> ServiceConfig {
        self.webhook_secret = secret.to_owned();
        self
    }

    pub fn log_filter(mut self, filter: &str) -> ServiceConfig {
        self.log_filter = filter.to_owned();
        self
    }

    /// Also appends the service's output to `path`.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> ServiceConfig {
        self.output.file = Some(path.into());
        self
    }

    /// Also writes the service's output to the test's output, after `prefix`.
    pub fn echo(mut self, prefix: &str) -> ServiceConfig {
        self.output.echo = Some(prefix.to_owned());
        self
    }

    /// The value this config gives an environment variable.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub struct Service {
    process: Option<Process>,
    /// The port it listens on (0 until the first start).
    pub port: u16,
    cfg: ServiceConfig,
    /// How many times this service was started (1 + restarts, + starts that failed).
    pub starts: u32,
    log: LogBuffer,
}

impl Service {
    /// Starts the service; returns once `/readyz` answers 200.
    pub async fn start(cfg: ServiceConfig) -> anyhow::Result<Service> {
        let mut service = Service { process: None, port: 0, cfg, starts: 0, log: LogBuffer::default() };
        service.launch().await?;
        Ok(service)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn webhook(&self) -> String {
        format!("{}/webhooks/seam", self.url())
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// `worker.concurrency` of this service: claims it may hold at once.
    pub fn worker_concurrency(&self) -> i64 {
        self.cfg.setting("APP_WORKER__CONCURRENCY").and_then(|v| v.parse().ok()).unwrap_or(8)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Everything the service printed, all its starts.
    pub fn logs(&self) -> String {
        self.log.text()
    }

    /// Starts the process (again: on the port it had); returns once `/readyz`
    /// answers 200, with how long that took.
    pub async fn launch(&mut self) -> anyhow::Result<Duration> {
        anyhow::ensure!(self.process.is_none(), "the service is already running");
        crate::install_tls_provider();
        let started = Instant::now();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let mut last_exit = String::new();
        // A restart can lose its port to a lingering socket or a busy machine: try again.
        for _ in 0..3 {
            let mut process = self.spawn()?;
            self.starts += 1;
            let port = match process.line(READY_DEADLINE.saturating_sub(started.elapsed()), listening_port).await {
                Ok(port) => port,
                Err(e) if process.exited().is_some() => {
                    last_exit = format!("{e:#}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                Err(e) => {
                    process.kill();
                    return Err(e.context(format!("the service did not start within {READY_DEADLINE:?}")));
                }
            };
            self.port = port;
            loop {
                if let Some(status) = process.exited() {
                    last_exit = format!("exited with {status}; its log ends:\n{}", self.log.tail(15));
                    break;
                }
                if let Ok(answer) = http.get(format!("{}/readyz", self.url())).send().await
                    && answer.status().is_success()
                {
                    self.process = Some(process);
                    return Ok(started.elapsed());
                }
                if started.elapsed() > READY_DEADLINE {
                    process.kill();
                    anyhow::bail!(
                        "the service was not ready within {READY_DEADLINE:?}; its log ends:\n{}",
                        self.log.tail(15)
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::bail!("the service exited during start: {last_exit}")
    }

    fn spawn(&self) -> anyhow::Result<Process> {
        let cfg = &self.cfg;
        let mut command = Command::new(&cfg.bin);
        command.arg("serve");
        for (key, _) in std::env::vars() {
            if key.starts_with("APP_") || key == "RUST_LOG" || key == "API_TOKEN" {
                command.env_remove(key);
            }
        }
        // The listening line (and the port in it) whatever the level.
        let filter = format!("{},seam_access_sync::app=info", cfg.log_filter);
        command
            .env("DATABASE_URL", &cfg.db_url)
            .env("SEAM_API_URL", &cfg.seam_url)
            .env("SEAM_API_KEY", &cfg.api_key)
            .env("SEAM_WEBHOOK_SECRET", &cfg.webhook_secret)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("RUST_LOG", filter)
            .envs(cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1");
        Process::spawn("the service", command, self.log.clone(), cfg.output.clone(), None)
    }

    /// SIGKILL, and reap it.
    pub fn sigkill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM: a graceful shutdown starts.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.process.as_ref().ok_or_else(|| anyhow::anyhow!("the service is not running"))?.terminate()
    }

    /// Waits for the process to exit; kills it when it takes longer than `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let process = self.process.as_mut().ok_or_else(|| anyhow::anyhow!("the service is not running"))?;
        let exited = process.wait_exit(within).await;
        self.process = None;
        exited
    }

    /// SIGTERM, then waits for the exit (killing it after `within`).
    pub async fn stop(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        self.sigterm()?;
        self.wait_exit(within).await
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::running)
    }
}

/// The port in the listening line, text (`addr=127.0.0.1:41234`) or JSON
/// (`"addr":"127.0.0.1:41234"`).
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains(LISTENING) {
        return None;
    }
    let (_, rest) = line.split_once("addr=").or_else(|| line.split_once("\"addr\":\""))?;
    let addr = rest.split(|c: char| c.is_whitespace() || c == '"' || c == ',').next()?;
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_either_log_format() {
        let text = "2026-11-25T10:00:00.000Z  INFO seam-access-sync listening addr=127.0.0.1:41234 run_mode=All";
        assert_eq!(listening_port(text), Some(41234));
        let json = r#"{"timestamp":"…","level":"INFO","message":"seam-access-sync listening","addr":"127.0.0.1:5","run_mode":"All"}"#;
        assert_eq!(listening_port(json), Some(5));
        assert_eq!(listening_port("addr=127.0.0.1:1"), None);
    }
}
