//! The service under test is the kit's ([`test_kit::Service`]): the real binary as a
//! child process, SIGKILLed and SIGTERMed by the scenarios, its log in the
//! scenario's log file. This suite only names the binary.

pub use test_kit::logs::file_tail as log_tail;
pub use test_kit::process::kill_all;
pub use test_kit::{Service, ServiceConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_seam-access-sync");

/// A port free right now (the throwaway Postgres cluster's).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
