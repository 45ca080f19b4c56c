//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its work).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use crate::store;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Which check failed is public; the underlying error text (database and Seam
/// messages) only for a caller presenting a read-API token.
pub async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let detailed = state.api_tokens.as_ref().is_some_and(|tokens| tokens.authorize(&headers));
    let detail = |reason: &str, error: String| if detailed { format!("{reason}: {error}") } else { reason.to_owned() };
    let database = match store::pending_migrations(&state.pool).await {
        Ok(0) => json!({ "ok": true }),
        Ok(pending) => json!({ "ok": false, "reason": format!("{pending} migration(s) not applied") }),
        Err(e) => json!({ "ok": false, "reason": detail("database unreachable", e.to_string()) }),
    };
    let states = state.workspaces.key_states();
    let workspaces: Vec<Value> = states
        .iter()
        .map(|(label, id, rejection)| match rejection {
            None => json!({ "name": label, "workspace_id": id, "ok": true }),
            Some(message) => json!({
                "name": label, "workspace_id": id, "ok": false,
                "reason": detail("Seam rejected the credential", message.clone()),
            }),
        })
        .collect();
    // Ready while any workspace can be served: one revoked key must not take the
    // others out of a load balancer (its own entry says what is wrong).
    let seam_api_key = if !state.settings.server.run_mode.runs_worker() {
        json!({ "ok": true, "reason": "not used by this process (run_mode = server)" })
    } else if states.iter().any(|(_, _, rejection)| rejection.is_none()) {
        json!({ "ok": true })
    } else {
        let message = states.iter().filter_map(|(_, _, r)| r.clone()).collect::<Vec<_>>().join("; ");
        json!({ "ok": false, "reason": detail("Seam rejected the API key", message) })
    };
    // Waiting for a workspace to be configured is not a reason to be unready; an
    // operator sees how many and (with a token) for which workspaces.
    let unroutable = if state.settings.server.run_mode.runs_worker() && database["ok"] == true {
        let waiting = store::queue::unroutable(&state.pool, &state.workspaces.claim_filter()).await.unwrap_or_default();
        let count: i64 = waiting.iter().map(|(_, n)| n).sum();
        let named: Vec<Value> = waiting.iter().map(|(w, n)| json!({ "workspace_id": w, "refetches": n })).collect();
        if detailed { json!({ "refetches": count, "by_workspace": named }) } else { json!({ "refetches": count }) }
    } else {
        json!({ "refetches": 0 })
    };
    // Seam failing does not make this process unready (webhooks are still stored);
    // the breaker's state says why the mirror is not moving.
    let seam_breaker = match state.workspaces.breaker().map(|b| b.view()) {
        None => json!({ "state": "closed", "reason": "no Seam calls in this process" }),
        Some(view) => json!({
            "state": view.state.as_str(),
            "consecutive_failures": view.consecutive_failures,
            "next_call_in_ms": view.wait.map(|w| w.as_millis() as u64),
            "times_opened": view.times_opened,
        }),
    };
    let ready = database["ok"] == true && seam_api_key["ok"] == true;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ready, "database": database, "seam_api_key": seam_api_key, "workspaces": workspaces,
        "unroutable": unroutable, "seam_breaker": seam_breaker,
    });
    (status, Json(body))
}
