use std::process::ExitCode;

use clap::Parser;
use seam_access_sync::cli::{self, Cli, Command};
use seam_access_sync::config::Settings;
use seam_access_sync::telemetry;

/// mimalloc: the request path allocates many small, short-lived buffers (JSON,
/// headers, query arguments); glibc's malloc spent ~16 % of the service's CPU on
/// them (BENCHMARKS.md). Built without transparent huge pages (`no_thp`), which
/// cost RSS (README "Choices worth explaining").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 0 done, 1 failed (database, Seam, …), 2 bad settings or usage.
#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    let settings = Settings::load().and_then(|settings| {
        if matches!(command, Command::Serve) {
            settings.check_secrets()?;
        }
        Ok(settings)
    });
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("seam-access-sync: {e:#}");
            return ExitCode::from(2);
        }
    };
    let _flushed_at_exit = telemetry::init(&settings.log, !matches!(command, Command::Serve));
    cli::run(command, settings).await
}
