//! The service under test: the real `seam-access-sync` binary as a child process,
//! configured by environment variables, so it can be SIGKILLed and SIGTERMed. Its
//! log (stdout and stderr) goes to the scenario's log file. Killed on drop.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_seam-access-sync");
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How long a start may take before it counts as failed.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The pids of the services started and not yet reaped, for [`kill_all`].
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs every service still running: the suite is interrupted, and the drops that
/// would kill them will not run.
pub fn kill_all() {
    let pids: Vec<u32> = RUNNING.lock().map(|mut r| r.drain(..).collect()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

fn reaped(child: &Child) {
    if let Ok(mut running) = RUNNING.lock() {
        running.retain(|pid| *pid != child.id());
    }
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub db_url: String,
    pub seam_url: String,
    /// `APP_*` settings, on top of nothing else: inherited `APP_*` variables are removed.
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

pub struct Service {
    child: Option<Child>,
    pub port: u16,
    cfg: ServiceConfig,
    /// How many times this service was started (1 + restarts).
    pub starts: u32,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Service {
    /// Starts the service on a free port; returns once `/readyz` answers 200.
    pub async fn start(cfg: ServiceConfig) -> anyhow::Result<Service> {
        let mut service = Service { child: None, port: free_port(), cfg, starts: 0 };
        service.launch().await?;
        Ok(service)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn webhook(&self) -> String {
        format!("{}/webhooks/seam", self.url())
    }

    /// `worker.concurrency` of this service: claims it may hold at once.
    pub fn worker_concurrency(&self) -> i64 {
        self.cfg.env.iter().find(|(k, _)| k == "APP_WORKER__CONCURRENCY").and_then(|(_, v)| v.parse().ok()).unwrap_or(8)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (again) on the same port; returns once `/readyz` answers
    /// 200, with how long that took.
    pub async fn launch(&mut self) -> anyhow::Result<Duration> {
        anyhow::ensure!(self.child.is_none(), "the service is already running");
        let started = Instant::now();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let mut last_exit = None;
        // A start can lose its port to a lingering socket or a busy machine: try again.
        for _ in 0..3 {
            self.child = Some(self.spawn()?);
            self.starts += 1;
            loop {
                if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                    reaped(&self.child.take().unwrap());
                    last_exit = Some(status);
                    break;
                }
                if let Ok(answer) = http.get(format!("{}/readyz", self.url())).send().await
                    && answer.status().is_success()
                {
                    return Ok(started.elapsed());
                }
                if started.elapsed() > READY_DEADLINE {
                    self.sigkill();
                    anyhow::bail!(
                        "the service was not ready within {READY_DEADLINE:?} (log: {})",
                        self.cfg.log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::bail!(
            "the service exited during start ({}); its log: {}\n{}",
            last_exit.map_or_else(|| "?".into(), |s| s.to_string()),
            self.cfg.log.display(),
            log_tail(&self.cfg.log, 15)
        )
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let log = OpenOptions::new().create(true).append(true).open(&self.cfg.log)?;
        let mut command = Command::new(BIN);
        command.arg("serve").current_dir(env!("CARGO_MANIFEST_DIR"));
        for (key, _) in std::env::vars() {
            if key.starts_with("APP_") || key == "RUST_LOG" || key == "API_TOKEN" {
                command.env_remove(key);
            }
        }
        command
            .env("DATABASE_URL", &self.cfg.db_url)
            .env("SEAM_API_URL", &self.cfg.seam_url)
            .env("SEAM_API_KEY", "seam_faults_test_key")
            .env("SEAM_WEBHOOK_SECRET", SECRET)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .envs(self.cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command.spawn()?;
        if let Ok(mut running) = RUNNING.lock() {
            running.push(child.id());
        }
        Ok(child)
    }

    /// SIGKILL, and reap it.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            reaped(&child);
        }
    }

    /// SIGTERM: a graceful shutdown starts.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow::anyhow!("the service is not running"))?;
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed: {status}");
        Ok(())
    }

    /// Waits for the process to exit; kills it when it takes longer than `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let started = Instant::now();
        let child = self.child.as_mut().ok_or_else(|| anyhow::anyhow!("the service is not running"))?;
        loop {
            if let Some(status) = child.try_wait()? {
                reaped(child);
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > within {
                self.sigkill();
                anyhow::bail!("the service did not exit within {within:?} (killed)");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| match c.try_wait() {
            Ok(Some(_)) => {
                reaped(c);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &PathBuf, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
