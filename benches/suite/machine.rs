//! What the suite reads about the machine and its processes: load averages, how
//! busy the machine is while the suite is idle, and a process's CPU time.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `/proc/loadavg`: the 1-, 5- and 15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(f64::NAN));
    [(); 3].map(|_| fields.next().unwrap_or(f64::NAN))
}

/// Tasks runnable right now (the `4/187` of `/proc/loadavg`), less the reader.
fn runnable_now() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(f64::NAN, |n| (n - 1.0).max(0.0))
}

/// All CPUs' (busy, total) jiffies from `/proc/stat`.
fn cpu_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        text.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The machine while the suite sends nothing (its subjects idle): how many tasks
/// were runnable on average (load, over `gap` instead of a minute), and how many
/// cores were busy.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    pub runnable: f64,
    pub busy_cores: f64,
}

pub async fn quiet(gap: Duration) -> Quiet {
    let (busy0, total0) = cpu_jiffies();
    let started = Instant::now();
    let (mut sum, mut n) = (0.0, 0u32);
    while started.elapsed() < gap {
        sum += runnable_now();
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (busy1, total1) = cpu_jiffies();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy_cores = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * cores;
    Quiet { runnable: sum / f64::from(n.max(1)), busy_cores }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that cannot be asked).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time process `pid` has used (user + system, all its threads; not its
/// children), in µs, from `/proc/<pid>/stat` fields 14 and 15.
pub fn cpu_us(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (field(14) + field(15)) as f64 * 1e6 / clock_ticks()
}

/// A command's first line of output, or "?".
pub fn version_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The CPU model, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "?".to_owned())
}
