//! Wires the pieces together: the HTTP server and the worker, side by side, until
//! shutdown.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::ApiTokens;
use crate::catchup::CatchUp;
use crate::clock::{Clock, SystemClock};
use crate::config::{RetentionSettings, Settings};
use crate::health::{self, SeamKeyStatus};
use crate::intake::IntakeWriter;
use crate::metrics::{HttpLabels, Metrics};
use crate::seam::SeamClient;
use crate::signature::{Verifier, WebhookSecrets};
use crate::worker::Worker;
use crate::{admin, api, db, metrics, periodic, sweep, webhook};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
    pub key_status: SeamKeyStatus,
    pub metrics: Arc<Metrics>,
    pub intake: IntakeWriter,
    /// None: the read API is off.
    pub api_tokens: Option<ApiTokens>,
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
            .route("/v1/access_codes", get(api::list_access_codes))
            .route("/v1/access_codes/{access_code_id}", get(api::get_access_code))
            .route_layer(middleware::from_fn_with_state(tokens, api::require_token));
        router = router.merge(protected).route("/v1/openapi.json", get(api::openapi));
    }
    let timeout = state.settings.server.request_timeout();
    let metrics = state.metrics.clone();
    router
        .with_state(state)
        .layer(middleware::from_fn_with_state(metrics, record_latency))
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            HeaderName::from_static("svix-signature"),
            HeaderName::from_static("webhook-signature"),
        ]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Observes each request's latency under its route template (bounded labels).
async fn record_latency(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    metrics.http_request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Prunes old events every `prune_interval_seconds` until shutdown.
async fn prune_events(pool: PgPool, retention: RetentionSettings, shutdown: CancellationToken) {
    if retention.events_days == 0 {
        return;
    }
    periodic::every(retention.prune_interval_seconds.max(1), shutdown, || async {
        match admin::prune_events(&pool, retention.events_days).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, days = retention.events_days, "pruned old events"),
            Err(e) => tracing::warn!(error = %e, "pruning old events failed; will try again"),
        }
    })
    .await;
}

/// A built service: bound, connected, migrated, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Option<Worker>,
    catch_up: Option<CatchUp>,
}

impl Application {
    /// Connects to the database (creating and migrating it as configured) and binds
    /// the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.check_secrets()?;
        let pool = db::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            db::migrate(&pool).await?;
        }
        Self::build_with(settings, pool, Arc::new(SystemClock)).await
    }

    /// Builds on an existing pool and clock (tests use their own of both).
    pub async fn build_with(settings: Settings, pool: PgPool, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.server.listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.listen_addr))?;
        // A worker-only process has no webhook endpoint and needs no secret.
        let secrets =
            if settings.server.run_mode.runs_endpoint() { settings.webhook_secrets()? } else { WebhookSecrets::none() };
        let verifier = Arc::new(Verifier::new(secrets, settings.webhook.tolerance_seconds));
        let key_status = SeamKeyStatus::default();
        let metrics = Arc::new(Metrics::new());
        let (worker, catch_up) = if settings.server.run_mode.runs_worker() {
            let seam = SeamClient::new(&settings.seam)?;
            let (worker_settings, store_pins) = (settings.worker.clone(), settings.store_pins);
            let worker = Worker::new(
                pool.clone(),
                seam.clone(),
                worker_settings,
                store_pins,
                key_status.clone(),
                metrics.clone(),
            );
            let catch_up_settings = settings.catch_up.clone();
            let catch_up =
                CatchUp::new(pool.clone(), seam, catch_up_settings, store_pins, key_status.clone(), metrics.clone());
            (Some(worker), Some(catch_up))
        } else {
            (None, None)
        };
        let api_tokens = ApiTokens::new(&settings.api_tokens());
        let intake =
            IntakeWriter::start(pool.clone(), settings.server.intake_writers, settings.server.intake_max_batch);
        let settings = Arc::new(settings);
        let state = AppState { pool, settings, verifier, clock, key_status, metrics, intake, api_tokens };
        Ok(Application { listener, state, worker, catch_up })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Serves until `shutdown` fires: then stops accepting, finishes requests and
    /// fetches in flight, and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, state, worker, catch_up } = self;
        let pool = state.pool.clone();
        tracing::info!(
            addr = %listener.local_addr()?,
            run_mode = ?state.settings.server.run_mode,
            "seam-access-sync listening"
        );
        // The worker process also runs the background jobs: catch-up, sweeps, pruning.
        if let Some(catch_up) = catch_up {
            tokio::spawn(catch_up.run(shutdown.clone()));
            let (sweep, metrics) = (state.settings.sweep.clone(), state.metrics.clone());
            tokio::spawn(sweep::run(pool.clone(), sweep, metrics, shutdown.clone()));
            tokio::spawn(prune_events(pool.clone(), state.settings.retention.clone(), shutdown.clone()));
        }
        let worker = worker.map(|worker| tokio::spawn(worker.run(shutdown.clone())));
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let served = server.await;
        shutdown.cancel();
        if let Some(worker) = worker {
            worker.await?;
        }
        pool.close().await;
        served?;
        Ok(())
    }
}
