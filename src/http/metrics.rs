//! `GET /metrics`: the Prometheus text format, with the queue gauges read from
//! Postgres at scrape time.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::store::admin;

/// `GET /metrics` in the Prometheus text format.
pub async fn serve(State(state): State<AppState>) -> Response {
    match admin::queue_status(&state.pool).await {
        Ok(queue) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            state.metrics.render(&queue, state.workspaces.breaker().map(|b| b.view()).as_ref()),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot read the queue");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}
