//! Log capture: what a child process printed ([`LogBuffer`], filled by
//! [`crate::process`]), or what this process's own tracing logged ([`capture`] and
//! [`captured`], for a service run in-process), kept for checks on what logs hold.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, Once, OnceLock};

/// Text lines, shared between whoever writes and whoever reads them.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<String>>);

impl LogBuffer {
    /// Everything so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// The last `lines` lines.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.0.lock().unwrap(), lines)
    }

    pub fn push_line(&self, line: &str) {
        let mut text = self.0.lock().unwrap();
        text.push_str(line);
        text.push('\n');
    }

    fn push_bytes(&self, bytes: &[u8]) {
        self.0.lock().unwrap().push_str(&String::from_utf8_lossy(bytes));
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines of a log file (empty when there is none).
pub fn file_tail(path: &Path, lines: usize) -> String {
    tail(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

fn in_process() -> &'static LogBuffer {
    static BUFFER: OnceLock<LogBuffer> = OnceLock::new();
    BUFFER.get_or_init(LogBuffer::default)
}

struct BufferWriter;

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        in_process().push_bytes(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this process's tracing events, as JSON lines, to the buffer [`captured`]
/// reads. The first call in a test binary installs it; later calls do nothing.
pub fn capture(filter: &str) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(|| BufferWriter).init();
    });
}

/// Everything this process logged since [`capture`] (all tests of the binary).
pub fn captured() -> String {
    in_process().text()
}
