//! The HTTP face of the service: the router and the state its handlers share.
//! Handlers read and verify requests, then hand them to `store`; they never talk
//! to Seam themselves.

pub mod changes;
pub mod console;
pub mod health;
pub mod metrics;
pub mod read_api;
pub mod serve;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::Level;

use crate::clock::Clock;
use crate::config::Settings;
use crate::seam::signature::Verifier;
use crate::seam::workspaces::Workspaces;
use crate::store::intake::IntakeWriter;
use crate::telemetry::metrics::{HttpLabels, HttpMethod, Metrics};
use read_api::ApiTokens;

/// What every handler can reach, behind one `Arc`: extracting it clones one
/// pointer per request, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of `AppState`.
pub struct Shared {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
    /// The configured workspaces: their ids (webhook secrets are scoped by them) and
    /// the state of their credentials.
    pub workspaces: Workspaces,
    pub metrics: Arc<Metrics>,
    pub intake: IntakeWriter,
    /// None: the read API is off.
    pub api_tokens: Option<ApiTokens>,
    /// The change stream (`/v1/changes`, the console's live updates); with the read API.
    pub changes: Option<changes::ChangeFeed>,
    /// The console's sessions; with the read API.
    pub console: Option<console::Sessions>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::serve));
    if state.settings.server.run_mode.runs_endpoint() {
        router = router.route("/webhooks/seam", post(webhook::receive));
    }
    if let Some(tokens) = state.api_tokens.clone() {
        let protected = Router::new()
            .route("/v1/access_codes", get(read_api::list_access_codes))
            .route("/v1/access_codes/{access_code_id}", get(read_api::get_access_code))
            .route("/v1/changes", get(read_api::changes))
            .route_layer(middleware::from_fn_with_state(tokens, read_api::require_token));
        router = router.merge(protected).route("/v1/openapi.json", get(read_api::openapi));
    }
    if state.console.is_some() {
        router = router.merge(console::router());
    }
    let deadline = RequestDeadline {
        timeout: state.settings.server.request_timeout(),
        retry_after_seconds: state.settings.server.retry_after_seconds,
    };
    let metrics = state.metrics.clone();
    router
        .with_state(state)
        .layer(middleware::from_fn_with_state(metrics, record_latency))
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn_with_state(deadline, enforce_deadline))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    // Bounded: a client chooses these, and they are logged with every line.
                    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let request_id = truncated(request_id, 64);
                    let method = HttpMethod::of(request.method());
                    let path = truncated(request.uri().path(), 256);
                    tracing::info_span!("request", %method, path, request_id)
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &tracing::Span| {
                    // A stored delivery has logged its own line, which says more.
                    if response.extensions().get::<Logged>().is_none() {
                        DefaultOnResponse::new().level(Level::INFO).on_response(response, latency, span)
                    }
                }),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            HeaderName::from_static("svix-signature"),
            HeaderName::from_static("webhook-signature"),
        ]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Marks a response whose request has logged its own line: the access log skips it.
#[derive(Clone, Copy)]
pub struct Logged;

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The safety net for a whole request (`server.request_timeout_ms`).
#[derive(Clone, Copy)]
struct RequestDeadline {
    timeout: Duration,
    retry_after_seconds: u32,
}

/// Answers a request that ran out of time as the README's table says: 503 with a
/// JSON body and `Retry-After`, so Svix (or any client) retries later.
async fn enforce_deadline(State(deadline): State<RequestDeadline>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = deadline.timeout.as_millis() as u64, "request timed out; answering 503");
            let body = Json(json!({ "error": "request_timeout", "message": "the request took too long; retry later" }));
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(deadline.retry_after_seconds));
            response
        }
    }
}

/// Observes each request's latency under its route template (bounded labels).
async fn record_latency(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = HttpMethod::of(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    metrics.http_request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}
