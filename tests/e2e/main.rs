//! End to end: the real service (the binary, webhook endpoint + worker) against Seam's
//! official fake API, `@seamapi/fake-seam-connect`, run by `tests/e2e/harness.mjs`,
//! which also signs and delivers webhooks like Svix.
//!
//! Needs Node >= 20.9 with the harness installed (`cd tests/e2e && npm ci`) and
//! Postgres: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test --test e2e`.
//! Each test gets a fresh fake and a fresh database.

mod api_key;
mod backup;
mod catch_up;
mod console;
mod contract;
mod delivery;
mod import;
mod lifecycle;
mod rig;
mod signatures;
mod touching;
mod workspaces;
