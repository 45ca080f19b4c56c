//! What the service tells its operators: logs (`init`: JSON lines in production,
//! readable text on a terminal) and Prometheus metrics (`metrics`).

pub mod metrics;

use std::io::IsTerminal;

use std::io::BufWriter;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`. The service
/// logs to stdout; operator commands log to stderr so their output stays clean.
///
/// Lines are formatted on the caller's thread and written by a dedicated thread
/// through a buffer flushed whenever it has nothing more queued: a burst of
/// requests costs a few `write` calls, not one per line, and a slow stdout (a full
/// pipe) never stalls a request until 128,000 lines are waiting. Keep the returned
/// guard until exit: dropping it flushes what is queued.
pub fn init(settings: &LogSettings, to_stderr: bool) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let on_terminal = if to_stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
    let (writer, guard) = if to_stderr {
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(BufWriter::new(std::io::stderr()))
    } else {
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(BufWriter::new(std::io::stdout()))
    };
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !on_terminal,
    };
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(on_terminal).with_writer(writer);
    if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
    guard
}
