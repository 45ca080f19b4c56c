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
fn main() -> ExitCode {
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
    let runtime = match runtime(settings.server.runtime_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("seam-access-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _flushed_at_exit = telemetry::init(&settings.log, !matches!(command, Command::Serve));
    runtime.block_on(cli::run(command, settings))
}

/// The runtime every task runs on (`server.runtime_threads`). One thread is the
/// default: a delivery is a few tens of microseconds of CPU between waits on the
/// network and Postgres, and handing tasks between two threads cost more in
/// wake-ups than it gained (BENCHMARKS.md, round five).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    use tokio::runtime::Builder;
    let mut builder = match threads {
        1 => Builder::new_current_thread(),
        0 => Builder::new_multi_thread(),
        n => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::runtime;

    #[test]
    fn one_thread_is_the_current_thread_runtime() {
        let runtime = runtime(1).unwrap();
        assert_eq!(runtime.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        assert_eq!(runtime.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }), 7);
    }

    #[test]
    fn more_threads_are_that_many_workers() {
        let runtime = runtime(3).unwrap();
        assert_eq!(runtime.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(runtime.metrics().num_workers(), 3);
    }

    #[test]
    fn zero_is_tokios_default() {
        let runtime = runtime(0).unwrap();
        assert_eq!(runtime.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        let expected = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap().get());
        assert_eq!(runtime.metrics().num_workers(), expected);
    }
}
