//! One integration-test binary: each module a capability, each test a sentence.

mod abuse;
mod backup;
mod breaker;
mod changes;
mod console;
mod contract;
mod helpers;
mod import;
mod limits;
mod operations;
mod pins;
mod read_api;
mod read_api_inputs;
mod reconcile;
mod request_ids;
mod signature;
mod supervision;
mod touching;
mod webhook;
mod worker;
mod workspaces;
mod workspaces_jobs;
