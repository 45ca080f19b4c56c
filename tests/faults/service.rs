//! The service under test is the kit's ([`test_kit::Service`]): the real binary as a
//! child process, SIGKILLed and SIGTERMed by the scenarios, its log in the
//! scenario's log file. This suite only names the binary.

pub use test_kit::logs::file_tail as log_tail;
pub use test_kit::{Service, ServiceConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_seam-access-sync");
