//! Wires the pieces into one process: the HTTP server (`http`) and the background
//! jobs (`jobs`), side by side, until shutdown.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::http::changes::ChangeFeed;
use crate::http::console::Sessions;
use crate::http::read_api::ApiTokens;
use crate::http::serve::{ConnectionLimits, serve};
use crate::http::{self, AppState, Shared};
use crate::jobs::backup::BackupPuller;
use crate::jobs::catch_up::CatchUp;
use crate::jobs::import::Import;
use crate::jobs::supervisor::Supervisor;
use crate::jobs::worker::Worker;
use crate::jobs::{prune, sweep};
use crate::seam::signature::{SecretScope, Verifier, WebhookSecrets};
use crate::seam::workspaces::{StartRefused, Workspaces};
use crate::store::intake::{IntakeWriter, IntakeWriters};
use crate::store::queue::RefetchNotifier;
use crate::store::{self};
use crate::telemetry::metrics::{Metrics, Task};

/// A built service: bound, connected, migrated, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Option<Worker>,
    catch_up: Option<CatchUp>,
    /// The import on start (`import.on_start`).
    import: Option<Import>,
    intake_writers: IntakeWriters,
    /// Backup access code pulls (worker processes).
    backup: Option<BackupPuller>,
}

impl Application {
    /// Connects to the database (creating and migrating it as configured) and binds
    /// the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.check_secrets()?;
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
        let pool = store::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            store::migrate(&pool).await?;
        }
        let app = Self::build_with(settings, pool, Arc::new(SystemClock)).await?;
        // Which workspace each credential reaches: a rejected credential or two
        // entries of one workspace stop the start; Seam being unreachable does not
        // (resolution goes on in the background, the codes wait in the queue).
        let (refusals, unknown) = app.state.workspaces.resolve().await;
        if !refusals.is_empty() {
            return Err(StartRefused(refusals).into());
        }
        if unknown > 0 {
            tracing::warn!(unknown, "Seam did not say which workspace some credentials reach; asking again every 30 s");
        }
        Ok(app)
    }

    /// Builds on an existing pool and clock (tests use their own of both).
    pub async fn build_with(settings: Settings, pool: PgPool, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.server.listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.listen_addr))?;
        let entries = settings.workspace_entries()?;
        let workspaces = Workspaces::new(&entries, &settings.seam, settings.worker.max_requests_per_second)?;
        // A worker-only process has no webhook endpoint and needs no secret.
        let verifier = if settings.server.run_mode.runs_endpoint() {
            let mut groups = vec![(SecretScope::AnyWorkspace, settings.webhook_secrets()?)];
            groups.extend(entries.iter().enumerate().map(|(i, e)| (SecretScope::Workspace(i), e.secrets.clone())));
            Verifier::scoped(groups, settings.webhook.tolerance_seconds)
        } else {
            Verifier::new(WebhookSecrets::none(), settings.webhook.tolerance_seconds)
        };
        let verifier = Arc::new(verifier);
        let metrics = Arc::new(Metrics::new());
        let (worker, catch_up, import) = if settings.server.run_mode.runs_worker() {
            anyhow::ensure!(!workspaces.all().is_empty(), "no Seam credential configured");
            let (worker_settings, store_pins) = (settings.worker.clone(), settings.store_pins);
            let worker = Worker::new(pool.clone(), workspaces.clone(), worker_settings, store_pins, metrics.clone());
            // Catch-up and the import cover every workspace, each with its own
            // credential, state and run lock.
            let import = settings.import.on_start.then(|| {
                Import::new(pool.clone(), workspaces.clone(), settings.import.clone(), store_pins, metrics.clone())
            });
            let catch_up_settings = settings.catch_up.clone();
            let catch_up =
                CatchUp::new(pool.clone(), workspaces.clone(), catch_up_settings, store_pins, metrics.clone());
            (Some(worker), Some(catch_up), import)
        } else {
            (None, None, None)
        };
        let backup = settings.server.run_mode.runs_worker().then(|| {
            let (worker, backup) = (settings.worker.clone(), settings.backup.clone());
            BackupPuller::new(pool.clone(), workspaces.clone(), worker, backup, settings.store_pins, metrics.clone())
        });
        let api_tokens = ApiTokens::new(&settings.api_tokens());
        // The change stream and the console come with the read API (`api.tokens`).
        let changes = api_tokens
            .as_ref()
            .map(|_| ChangeFeed::new(pool.clone(), settings.api.max_change_streams, metrics.change_streams.clone()));
        let console = api_tokens.as_ref().map(|tokens| Sessions::new(tokens, &settings.console));
        // Work the intake queues wakes this process's worker at once, and others by NOTIFY.
        let notifier = RefetchNotifier::new(worker.as_ref().map(Worker::wake_handle));
        let (intake, intake_writers) =
            IntakeWriter::new(pool.clone(), settings.server.intake_writers, settings.server.intake_max_batch, notifier);
        let settings = Arc::new(settings);
        let state = AppState::new(Shared {
            pool,
            settings,
            verifier,
            clock,
            workspaces,
            metrics,
            intake,
            api_tokens,
            changes,
            console,
        });
        Ok(Application { listener, state, worker, catch_up, import, intake_writers, backup })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` fires: then stops accepting, finishes requests and
    /// fetches in flight, waits for the background tasks, and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, state, worker, catch_up, import, intake_writers, backup } = self;
        let pool = state.pool.clone();
        tracing::info!(
            addr = %listener.local_addr()?,
            run_mode = ?state.settings.server.run_mode,
            runtime_threads = state.settings.server.runtime_threads,
            "seam-access-sync listening"
        );
        // The worker process also runs the background jobs: the import on start,
        // catch-up, sweeps, pruning.
        // Each is supervised: restarted when it fails, waited for at shutdown.
        let mut supervisor = Supervisor::new(shutdown.clone(), state.metrics.clone());
        // The intake writers end when the server (the last `IntakeWriter`) is gone,
        // after the requests in flight were answered.
        for _ in 0..state.settings.server.intake_writers.max(1) {
            let writers = intake_writers.clone();
            supervisor.spawn(Task::IntakeWriter, move |_| writers.clone().run_one());
        }
        let writers = intake_writers.clone();
        supervisor.spawn(Task::IntakeWriter, move |stop| writers.clone().run_notifier(stop));
        let workspaces = state.workspaces.clone();
        supervisor.spawn(Task::Workspaces, move |stop| {
            workspaces.clone().resolve_until_known(std::time::Duration::from_secs(30), stop)
        });
        // Catch-up and the import on start are one supervised task each, going through
        // the workspaces in turn rather than one task per workspace: every workspace's
        // Seam calls share one pace (`worker.max_requests_per_second`), so runs side by
        // side in one process would not finish sooner; one at a time holds one extra
        // database connection (the run lock's) rather than one per workspace; and a
        // workspace resolved later needs no new task. A workspace's failure, or panic,
        // ends its own run only. Runs of different workspaces still go side by side
        // across replicas: each workspace has its own run lock.
        if let Some(import) = import {
            supervisor.spawn(Task::Import, move |stop| import.clone().run_on_start(stop));
        }
        if let Some(catch_up) = catch_up {
            supervisor.spawn(Task::CatchUp, move |stop| catch_up.clone().run(stop));
            let (sweep, metrics, db) = (state.settings.sweep.clone(), state.metrics.clone(), pool.clone());
            supervisor.spawn(Task::Sweep, move |stop| sweep::run(db.clone(), sweep.clone(), metrics.clone(), stop));
            let (retention, metrics, db) = (state.settings.retention.clone(), state.metrics.clone(), pool.clone());
            supervisor.spawn(Task::Prune, move |stop| prune::run(db.clone(), retention.clone(), metrics.clone(), stop));
        }
        if let Some(worker) = worker {
            worker.supervise(&mut supervisor);
        }
        if let Some(backup) = backup {
            supervisor.spawn(Task::BackupPulls, move |stop| backup.clone().run(stop));
        }
        if let Some(feed) = state.changes.clone() {
            supervisor.spawn(Task::ChangeFeed, move |stop| feed.clone().listen(stop));
        }
        let limits = ConnectionLimits::from_settings(&state.settings.server);
        serve(listener, http::router(state), limits, shutdown.clone()).await;
        shutdown.cancel();
        supervisor.wait().await;
        pool.close().await;
        Ok(())
    }
}
