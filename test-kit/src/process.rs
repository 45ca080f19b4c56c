//! A child process with its output captured: every line of stdout and stderr goes
//! to a [`LogBuffer`], optionally to a file (appended) and to the test's output
//! (shown when a test fails). Tests can wait for a stdout line (a ready line, the
//! port a server chose). Killed on drop, or first asked to exit by closing stdin.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::logs::LogBuffer;

/// Where a process's output goes, besides its [`LogBuffer`].
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Appended to this file.
    pub file: Option<PathBuf>,
    /// Written to the test's output (stderr), each line after this prefix.
    pub echo: Option<String>,
}

pub struct Process {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Closing stdin asks the process to exit: how long to let it before SIGKILL.
    stdin_grace: Option<Duration>,
    stdout_lines: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    log: LogBuffer,
}

impl Process {
    /// Starts `command` with stdout and stderr captured into `log` (and `output`).
    /// With `stdin_grace`, stdin is a pipe kept open: closing it (on drop) is the
    /// process's signal to exit, and it gets that long before it is killed.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: LogBuffer,
        output: Output,
        stdin_grace: Option<Duration>,
    ) -> anyhow::Result<Process> {
        let file = match &output.file {
            Some(path) => Some(Arc::new(OpenOptions::new().create(true).append(true).open(path)?)),
            None => None,
        };
        command
            .stdin(if stdin_grace.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            command.spawn().map_err(|e| anyhow::anyhow!("cannot run {name} ({:?}): {e}", command.get_program()))?;
        let (lines_tx, stdout_lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Sink { log: log.clone(), file, echo: output.echo };
        let readers = vec![
            {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        sink.write(&line);
                        let _ = lines_tx.send(line);
                    }
                })
            },
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.write(&line);
                }
            }),
        ];
        let stdin = child.stdin.take();
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        Ok(Process { name: name.to_owned(), child: Some(child), stdin, stdin_grace, stdout_lines, readers, log })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it printed so far.
    pub fn log(&self) -> &LogBuffer {
        &self.log
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `within` for a stdout line that `pick` turns into a value; fails
    /// when the process exits first or the time runs out (saying so, with its log).
    pub async fn line<T>(&mut self, within: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> anyhow::Result<T> {
        let started = Instant::now();
        loop {
            match self.stdout_lines.try_recv() {
                Ok(line) => {
                    if let Some(value) = pick(&line) {
                        return Ok(value);
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5)).await;
                    anyhow::bail!(
                        "{} exited before printing the line waited for ({}); its log ends:\n{}",
                        self.name,
                        status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                        self.log.tail(15)
                    );
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            anyhow::ensure!(
                started.elapsed() < within,
                "{} printed no such line within {within:?}; its log ends:\n{}",
                self.name,
                self.log.tail(15)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|pid| *pid != child.id());
        }
    }

    /// SIGTERM: a graceful shutdown starts.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} ({}) failed: {status}", self.name);
        Ok(())
    }

    /// Waits for the process to exit; kills it when it takes longer than `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let started = Instant::now();
        let child = self.child.as_mut().ok_or_else(|| anyhow::anyhow!("{} was never started", self.name))?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > within {
                self.kill();
                anyhow::bail!("{} did not exit within {within:?} (killed)", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The pids of the processes started and not yet killed, for [`kill_all`].
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// SIGKILLs every process this kit started that is still running: for a test
/// binary interrupted by a signal, whose drops will not run.
pub fn kill_all() {
    let pids: Vec<u32> = RUNNING.lock().map(|mut running| running.drain(..).collect()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing stdin is the "exit now" of a process that reads it.
        drop(self.stdin.take());
        if let (Some(grace), Some(child)) = (self.stdin_grace, self.child.as_mut()) {
            let asked = Instant::now();
            while asked.elapsed() < grace && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// Where each line goes.
#[derive(Clone)]
struct Sink {
    log: LogBuffer,
    file: Option<Arc<std::fs::File>>,
    echo: Option<String>,
}

impl Sink {
    fn write(&self, line: &str) {
        self.log.push_line(line);
        if let Some(file) = &self.file {
            // One write per line: lines of stdout and stderr never mix.
            let _ = (&**file).write_all(format!("{line}\n").as_bytes());
        }
        if let Some(prefix) = &self.echo {
            eprintln!("{prefix}{line}");
        }
    }
}

/// A process's memory as `/proc/<pid>/status` reports it, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub resident: u64,
    /// `VmHWM`: the most it was ever resident.
    pub peak: u64,
}

/// The memory of process `pid`; None when its status cannot be read (it is gone).
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse::<u64>().ok());
    Some(Memory { resident: field("VmRSS:")? * 1024, peak: field("VmHWM:")? * 1024 })
}
