//! seam-access-sync: receives Seam `access_code.*` webhooks, re-fetches each code
//! and mirrors its status, warnings and errors in Postgres.
//!
//! Data flows one way: request → [`signature`] → [`event`] → [`intake`] (persist +
//! [`queue`]) → [`worker`] → [`seam`] (fetch) → [`mirror`] (store).

pub mod admin;
pub mod api;
pub mod app;
pub mod catchup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod event;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod mirror;
pub mod periodic;
pub mod queue;
pub mod seam;
pub mod signature;
pub mod sweep;
pub mod telemetry;
pub mod webhook;
pub mod worker;

/// reqwest and sqlx are built on rustls with the `ring` provider; install it once
/// per process before the first TLS client is made.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
