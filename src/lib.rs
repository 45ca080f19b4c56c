//! seam-access-sync: receives Seam `access_code.*` webhooks, re-fetches each code
//! and mirrors its status, warnings and errors in Postgres.
//!
//! Data flows one way, folder by folder:
//! request → [`http`] (webhook) → [`seam`] (verify signature, parse event) →
//! [`store`] (persist event + queue a re-fetch) → [`jobs`] (worker claims it) →
//! [`seam`] (fetch the code) → [`store`] (mirror, history, NOTIFY).
//!
//! `http` and `jobs` use `store` and `seam`; `store` uses `seam`'s types; `seam`
//! uses neither. [`app`] wires them into one process; [`cli`] is the command line.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod jobs;
pub mod seam;
pub mod store;
pub mod telemetry;
mod text_enum;

/// reqwest and sqlx are built on rustls with the `ring` provider; install it once
/// per process before the first TLS client is made.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
