//! Everything about Seam itself: the webhook signature scheme (`signature`), the
//! event shape (`event`), the REST client with the classification of its answers
//! (`client`) and keeping PINs out of what is stored and logged (`redact`). Nothing
//! here touches Postgres or HTTP serving.

pub mod breaker;
pub mod client;
pub mod credential;
pub mod event;
pub mod problems;
pub mod redact;
pub mod signature;
pub mod workspaces;

use std::sync::{Arc, RwLock};

pub use client::SeamClient;

/// Whether Seam accepted the API key on the last fetch; shared by the jobs
/// (which learn it) and `/readyz` (which reports it).
#[derive(Debug, Clone, Default)]
pub struct SeamKeyStatus(Arc<RwLock<Option<String>>>);

impl SeamKeyStatus {
    pub fn rejected(&self, message: String) {
        *self.0.write().expect("key status lock") = Some(message);
    }
    pub fn accepted(&self) {
        if self.rejection().is_some() {
            *self.0.write().expect("key status lock") = None;
        }
    }
    pub fn rejection(&self) -> Option<String> {
        self.0.read().expect("key status lock").clone()
    }
}
