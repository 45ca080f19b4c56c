//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its work).

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::db;

/// Whether Seam accepted the API key on the last fetch; shared by the worker
/// (which learns it) and `/readyz` (which reports it).
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

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match db::pending_migrations(&state.pool).await {
        Ok(0) => json!({ "ok": true }),
        Ok(pending) => json!({ "ok": false, "reason": format!("{pending} migration(s) not applied") }),
        Err(e) => json!({ "ok": false, "reason": format!("database unreachable: {e}") }),
    };
    let seam_api_key = if !state.settings.server.run_mode.runs_worker() {
        json!({ "ok": true, "reason": "not used by this process (run_mode = server)" })
    } else {
        match state.key_status.rejection() {
            None => json!({ "ok": true }),
            Some(message) => json!({ "ok": false, "reason": format!("Seam rejected the API key: {message}") }),
        }
    };
    let ready = database["ok"] == true && seam_api_key["ok"] == true;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready, "database": database, "seam_api_key": seam_api_key })))
}
