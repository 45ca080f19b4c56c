//! Wires the pieces together: the HTTP server and the worker, side by side, until
//! shutdown.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderName, StatusCode, header};
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

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::health::{self, SeamKeyStatus};
use crate::seam::SeamClient;
use crate::signature::{Verifier, WebhookSecrets};
use crate::worker::Worker;
use crate::{db, webhook};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
    pub key_status: SeamKeyStatus,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let mut router = Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
    if state.settings.server.run_mode.runs_endpoint() {
        router = router.route("/webhooks/seam", post(webhook::receive));
    }
    let timeout = state.settings.server.request_timeout();
    router
        .with_state(state)
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

/// A built service: bound, connected, migrated, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Option<Worker>,
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
        let worker = if settings.server.run_mode.runs_worker() {
            let seam = SeamClient::new(&settings.seam)?;
            Some(Worker::new(pool.clone(), seam, settings.worker.clone(), settings.store_pins, key_status.clone()))
        } else {
            None
        };
        let state = AppState { pool, settings: Arc::new(settings), verifier, clock, key_status };
        Ok(Application { listener, state, worker })
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
        let Application { listener, state, worker } = self;
        let pool = state.pool.clone();
        tracing::info!(
            addr = %listener.local_addr()?,
            run_mode = ?state.settings.server.run_mode,
            "seam-access-sync listening"
        );
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
