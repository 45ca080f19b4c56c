//! `POST /webhooks/seam`: read the raw body → verify → parse → persist → 2xx.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::{AppState, Logged};
use crate::seam::event::{EventError, SeamEvent};
use crate::seam::signature::{SecretScope, VerifyError};
use crate::store::intake::{StoreError, Stored};

/// Everything that can stop a delivery, each with its answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("body did not arrive in time")]
    BodyTimeout,
    #[error("body could not be read")]
    BodyUnreadable,
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error("not a Seam event: {0}")]
    NotAnEvent(#[from] EventError),
    #[error("database unavailable")]
    Database { source: StoreError, retry_after_seconds: u32 },
    /// Signed with one workspace's secret, for another workspace's event.
    #[error("the secret that signed this delivery belongs to another workspace than the event's")]
    WorkspaceMismatch,
    /// Signed with the secret of a workspace whose id Seam has not told us yet.
    #[error("the workspace of the secret that signed this delivery is not known yet; retry later")]
    WorkspaceUnresolved { retry_after_seconds: u32 },
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::BodyUnreadable | WebhookError::NotAnEvent(_) => StatusCode::BAD_REQUEST,
            WebhookError::Signature(e) if e.is_malformed() => StatusCode::BAD_REQUEST,
            WebhookError::Signature(_) | WebhookError::WorkspaceMismatch => StatusCode::UNAUTHORIZED,
            WebhookError::Database { .. } | WebhookError::WorkspaceUnresolved { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable name for the answer body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::TooLarge(_) => "body_too_large",
            WebhookError::BodyTimeout => "body_timeout",
            WebhookError::BodyUnreadable => "body_unreadable",
            WebhookError::Signature(e) => e.code(),
            WebhookError::NotAnEvent(_) => "invalid_event",
            WebhookError::Database { .. } => "database_unavailable",
            WebhookError::WorkspaceMismatch => "workspace_mismatch",
            WebhookError::WorkspaceUnresolved { .. } => "workspace_unresolved",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Never the body, never a secret: the reason and, for our own faults, the cause.
        match &self {
            WebhookError::Database { source, .. } => {
                tracing::error!(error = %source, reason = self.code(), "webhook not stored; answering 503 so the sender retries")
            }
            _ => tracing::warn!(reason = self.code(), detail = %self, status = status.as_u16(), "webhook rejected"),
        }
        let mut response = (status, Json(json!({ "error": self.code(), "message": self.to_string() }))).into_response();
        if let WebhookError::Database { retry_after_seconds, .. }
        | WebhookError::WorkspaceUnresolved { retry_after_seconds } = self
        {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
}

pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = accept(&state, &headers, body).await;
    state.metrics.delivery(match &result {
        Ok((stored, _)) => stored.label(),
        Err(e) => e.code(),
    });
    match result {
        Ok((stored, event_id)) => {
            let mut response =
                (StatusCode::OK, Json(Answer { status: stored.label(), event_id: &event_id })).into_response();
            response.extensions_mut().insert(Logged);
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The answer to a stored delivery.
#[derive(serde::Serialize)]
struct Answer<'a> {
    status: &'static str,
    event_id: &'a str,
}

/// The path of one delivery; returns what became of it and its event id.
async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<(Stored, String), WebhookError> {
    let server = &state.settings.server;
    let body = read_body(headers, body, server.max_body_bytes, server.body_read_timeout()).await?;
    let delivery = state.verifier.verify(headers, &body, state.clock.now_unix())?;
    let event = SeamEvent::parse(&body, state.settings.store_pins)?;
    if let SecretScope::Workspace(entry) = delivery.scope {
        match state.workspaces.id_of(entry) {
            None => return Err(WebhookError::WorkspaceUnresolved { retry_after_seconds: server.retry_after_seconds }),
            Some(id) if event.workspace_id.as_deref() != Some(id.as_str()) => {
                state.metrics.workspace_mismatches.inc();
                return Err(WebhookError::WorkspaceMismatch);
            }
            Some(_) => {}
        }
    }
    let routable = state.workspaces.serves(event.workspace_id.as_deref());
    let event_id = event.event_id.clone();
    let (event_type, access_code_id) = (event.event_type.clone(), event.access_code_id.clone());
    let workspace_id = event.workspace_id.clone();
    let stored = state
        .intake
        .store(&delivery.message_id, event)
        .await
        .map_err(|source| WebhookError::Database { source, retry_after_seconds: server.retry_after_seconds })?;
    // The delivery's one log line, at debug: every accepted delivery is a row in
    // seam_events and a count in the metrics already, and formatting a line cost
    // more than the rest of the request (BENCHMARKS.md). The access log skips it
    // (`Logged`); rejections are logged at warn.
    tracing::debug!(
        delivery_id = %delivery.message_id,
        %event_id,
        %event_type,
        access_code_id = access_code_id.as_deref().unwrap_or(""),
        outcome = stored.label(),
        "webhook stored"
    );
    if stored == Stored::New && !routable && !state.workspaces.all().is_empty() {
        // Acknowledged (the signature was valid) but no configured credential reaches
        // its workspace: it waits in the queue until one is added.
        state.metrics.events_unroutable.inc();
        tracing::warn!(%event_id, workspace_id = workspace_id.as_deref().unwrap_or(""), "event of a workspace no credential is configured for: stored, not fetched");
    }
    Ok((stored, event_id))
}

/// Reads at most `limit` bytes: a declared length over the limit is refused before
/// reading, and a body that grows past it is cut off.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, WebhookError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(WebhookError::TooLarge(limit));
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(WebhookError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(WebhookError::TooLarge(limit)),
        Ok(Err(_)) => Err(WebhookError::BodyUnreadable),
    }
}
