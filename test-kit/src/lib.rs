//! One test kit for every suite of seam-access-sync (`tests/api`, `tests/e2e`,
//! `tests/faults`) and for `benches/suite.rs`:
//!
//! - [`service`]: the real `seam-access-sync` binary as a child process. It binds
//!   port 0 and the kit reads the port from its "seam-access-sync listening" line;
//!   a restart binds the same port again. SIGKILL, SIGTERM, waiting for the exit.
//! - [`process`] and [`logs`]: any child process with its output captured (memory,
//!   a file, the test's output), and the in-process tracing capture.
//! - [`signing`]: the test secrets and a signer that is not the code under test
//!   (the `standardwebhooks` crate).
//! - [`eventually()`]: polls a condition until a deadline, then fails saying what it
//!   waited for and what it saw last.
//! - [`fixtures`]: Seam's objects (access codes, unmanaged codes, events, warnings,
//!   errors) as Seam's OpenAPI document describes them (`tests/api/contract.rs` checks).
//! - [`seam`]: the one Seam stand-in, a real HTTP server the test programs: answers
//!   per code, modes (500s, slow, down), the event log, call counts.
//!
//! Nothing here knows a suite: each passes its binary (`env!("CARGO_BIN_EXE_…")`),
//! database and settings.

pub mod eventually;
pub mod fixtures;
pub mod logs;
pub mod process;
pub mod seam;
pub mod service;
pub mod signing;

pub use eventually::{DEADLINE, TimedOut, eventually, eventually_within, try_eventually};
pub use seam::{Answer, Mode, SeamHandle, StandIn};
pub use service::{Service, ServiceConfig};
pub use signing::{NEW_SECRET, SECRET, sign, sign_text, svix_headers};

/// reqwest is built on rustls with the `ring` provider: the kit's HTTP clients need
/// it installed, whichever suite runs first.
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The URL of the database `options` point at, for a child process (`DATABASE_URL`).
pub fn database_url(options: &sqlx::postgres::PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}
