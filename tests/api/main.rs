//! One integration-test binary: each module a capability, each test a sentence.

mod abuse;
mod helpers;
mod operations;
mod read_api;
mod read_api_inputs;
mod reconcile;
mod signature;
mod webhook;
mod worker;
