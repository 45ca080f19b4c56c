//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its work).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use crate::store;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match store::pending_migrations(&state.pool).await {
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
