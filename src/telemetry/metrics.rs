//! Prometheus metrics, served at `GET /metrics` (`http::metrics`). One registry per application (no
//! globals); queue gauges are read from Postgres at scrape time, so every replica
//! reports the shared queue.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::seam::breaker::BreakerView;
use crate::seam::client::{FetchKind, PageKind, SeamList};
use crate::seam::event::CodeEndpoint;
pub use crate::store::admin::CatchUpRun;
use crate::store::admin::QueueStatus;
use crate::store::sweep::SweepKind;

crate::text_enum::text_enum! {
    /// An HTTP method as a label: the standard ones by name, anything else `other`,
    /// so a client cannot make a new series per request.
    pub enum HttpMethod {
        Get = "GET", Head = "HEAD", Post = "POST", Put = "PUT", Delete = "DELETE",
        Connect = "CONNECT", Options = "OPTIONS", Trace = "TRACE", Patch = "PATCH", Other = "other",
    }
}

impl HttpMethod {
    pub fn of(method: &axum::http::Method) -> HttpMethod {
        method.as_str().parse().unwrap_or(HttpMethod::Other)
    }
}

crate::text_enum::text_enum! {
    /// What a fetch did to the mirror.
    pub enum MirrorWrite {
        Created = "created", Changed = "changed", Deleted = "deleted", Unchanged = "unchanged", Stale = "stale",
    }
}

crate::text_enum::text_enum! {
    /// Worker failures that are not Seam's answers.
    pub enum WorkerError {
        /// A step failed (the database, mostly).
        Step = "step",
        /// Another worker took the claim over.
        ClaimLost = "claim_lost",
    }
}

crate::text_enum::text_enum! {
    /// How one attempt to pull a backup access code ended (`jobs::backup`).
    pub enum BackupPullOutcome {
        /// Seam answered with the backup code.
        Pulled = "pulled",
        /// After an answer was lost (a crash, a timeout), the code showed the backup
        /// Seam had pulled: no second call.
        Recovered = "recovered",
        /// Seam refused (a 4xx): failed, with Seam's reason.
        Rejected = "rejected",
        /// 429, 5xx, no answer, a rejected key: tried again later.
        Retried = "retried",
        /// Retried `worker.max_attempts` times: failed.
        GaveUp = "gave_up",
        /// The code no longer exists.
        Gone = "gone",
    }
}

crate::text_enum::text_enum! {
    /// What a code the import listed did to the mirror.
    pub enum ImportCode {
        Created = "created", Changed = "changed", Unchanged = "unchanged",
        /// A fetch newer than the list was already stored.
        Stale = "stale",
        /// Unreadable, or refused by Postgres: left out.
        Skipped = "skipped",
    }
}

crate::text_enum::text_enum! {
    pub enum ImportRun {
        Completed = "completed",
        /// Another replica holds the import lock.
        Skipped = "skipped",
        /// Stopped short; the next run resumes it.
        Failed = "failed",
    }
}

crate::text_enum::text_enum! {
    /// Why the import queued a re-fetch of a mirrored code.
    pub enum ImportRefetch {
        /// Its device's lists did not return it.
        Unlisted = "unlisted",
        /// Its device is no longer listed.
        DeviceUnlisted = "device_unlisted",
    }
}

crate::text_enum::text_enum! {
    /// The long-running background tasks, by name (`jobs::supervisor`).
    pub enum Task {
        CatchUp = "catch_up", Sweep = "sweep", Prune = "prune",
        /// The import when the worker starts.
        Import = "import",
        /// One of the worker's fetch loops.
        Worker = "worker",
        /// The worker's LISTEN task.
        WorkerListener = "worker_listener",
        /// One of the webhook intake's group-commit writers.
        IntakeWriter = "intake_writer",
        /// Asks Seam which workspace each credential reaches until it knows.
        Workspaces = "workspaces",
        /// Decides and makes backup access code pulls.
        BackupPulls = "backup_pulls",
        /// The change stream's shared LISTEN (`/v1/changes`, the console).
        ChangeFeed = "change_feed",
    }
}

crate::text_enum::text_enum! {
    pub enum CatchUpEvent {
        /// No webhook brought it.
        New = "new",
        Seen = "seen",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: HttpMethod,
    /// The route template (`/webhooks/seam`) or `unmatched`, never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeamLabels {
    pub endpoint: CodeEndpoint,
    pub outcome: FetchKind,
    /// The HTTP status, or `none` when no answer came.
    pub status: String,
    /// The workspace (`Workspaces::metric_label`: its id, or `all` beyond 50 workspaces).
    pub workspace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabels {
    pub list: SeamList,
    pub outcome: PageKind,
}

/// One label, `kind`, of a closed set of values.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct KindLabel<K> {
    pub kind: K,
}

impl<K: EncodeLabelValue + Copy> EncodeLabelSet for KindLabel<K> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("kind", self.kind)].encode(encoder)
    }
}

/// One label, `outcome`, of a closed set of values.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Outcome<O> {
    pub outcome: O,
}

impl<O: EncodeLabelValue + Copy> EncodeLabelSet for Outcome<O> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("outcome", self.outcome)].encode(encoder)
    }
}

/// One label, `task`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TaskLabel {
    pub task: Task,
}

impl EncodeLabelSet for TaskLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("task", self.task)].encode(encoder)
    }
}

type Counters<L> = Family<L, Counter>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type GaugeF64 = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Counters<OutcomeLabel>,
    pub http_request_duration: Histograms<HttpLabels>,
    pub seam_requests: Counters<SeamLabels>,
    pub seam_request_duration: Histograms<SeamLabels>,
    pub mirror_lag: Histogram,
    pub mirror_changes: Counters<Outcome<MirrorWrite>>,
    pub worker_errors: Counters<KindLabel<WorkerError>>,
    pub catch_up_runs: Counters<KindLabel<CatchUpRun>>,
    pub catch_up_events: Counters<KindLabel<CatchUpEvent>>,
    pub sweep_refetches: Counters<KindLabel<SweepKind>>,
    pub import_runs: Counters<Outcome<ImportRun>>,
    pub import_devices: Counter,
    pub import_codes: Counters<Outcome<ImportCode>>,
    pub import_refetches: Counters<KindLabel<ImportRefetch>>,
    pub import_seam_calls: Counters<ListLabels>,
    pub task_failures: Counters<TaskLabel>,
    pub backup_pulls: Counters<Outcome<BackupPullOutcome>>,
    pub events_unroutable: Counter,
    pub workspace_mismatches: Counter,
    /// Change streams open (`/v1/changes`, the console's live updates) in this process.
    pub change_streams: Gauge,
    catch_up_mark_age: GaugeF64,
    catch_up_success_age: GaugeF64,
    refetches_pending: Gauge,
    refetches_in_flight: Gauge,
    oldest_pending_age: GaugeF64,
    dead_letters: Gauge,
    last_webhook_age: GaugeF64,
    seam_breaker_state: Gauge,
    seam_breaker_opened: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Registers `metric` under `name` and hands it back.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("seam_access_sync");
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {
                registered(&mut r, $name, $help, $metric)
            };
        }
        Metrics {
            webhook_deliveries: register! { "webhook_deliveries", "Webhook deliveries by outcome: accepted, duplicate, or the rejection reason",
            Family::default() },
            http_request_duration: register! { "http_request_duration_seconds", "HTTP request latency by method, route and status",
            Family::new_with_constructor(latency_histogram) },
            seam_requests: register! { "seam_requests", "Seam API calls by endpoint, outcome and status",
            Family::default() },
            seam_request_duration: register! { "seam_request_duration_seconds", "Seam API call latency by endpoint, outcome and status",
            Family::new_with_constructor(latency_histogram) },
            mirror_lag: register! { "mirror_lag_seconds", "Time from the oldest unserved webhook for a code to its mirror row being written",
            Histogram::new(exponential_buckets(0.001, 2.0, 20)) },
            mirror_changes: register! { "mirror_writes", "Fetch results applied to the mirror: created, changed, deleted, unchanged, stale",
            Family::default() },
            worker_errors: register! { "worker_errors", "Worker failures that are not Seam's answers: step (database), claim_lost",
            Family::default() },
            catch_up_runs: register! { "catch_up_runs", "Catch-up runs from Seam's event log by kind: completed, partial (stopped at the page cap, progress saved), skipped (another replica), failed",
            Family::default() },
            catch_up_events: register! { "catch_up_events", "Events found by catch-up (the access_code, device and connected_account types it asks for), by kind: new (no webhook brought them) or seen",
            Family::default() },
            sweep_refetches: register! { "sweep_refetches", "Re-fetches queued by sweeps, by kind: stuck, time_bound, settled",
            Family::default() },
            import_runs: register! { "import_runs", "Import runs by outcome: completed, skipped (another replica), failed (resumed by the next run)",
            Family::default() },
            import_devices: register! { "import_devices", "Devices whose codes the import has listed and stored",
            Counter::default() },
            import_codes: register! { "import_codes", "Codes the import listed, by what they did to the mirror: created, changed, unchanged, stale, skipped",
            Family::default() },
            import_refetches: register! { "import_refetches", "Re-fetches the import queued, by kind: unlisted (its device's lists left it out), device_unlisted",
            Family::default() },
            import_seam_calls: register! { "import_seam_calls", "Seam list calls made by the import, by list (devices, access_codes, unmanaged_access_codes) and outcome",
            Family::default() },
            task_failures: register! { "task_failures", "Panics and unexpected ends of background work, by task: a task restarted, or one step of it failed",
            Family::default() },
            backup_pulls: register! { "backup_pulls", "Attempts to pull a backup access code, by outcome: pulled, recovered (found pulled after a lost answer), rejected, retried, gave_up, gone",
            Family::default() },
            events_unroutable: register! { "events_unroutable", "Accepted events of a workspace no configured credential reaches: stored, not fetched until one is added",
            Counter::default() },
            workspace_mismatches: register! { "webhook_workspace_mismatches", "Deliveries refused because a workspace's secret signed another workspace's event",
            Counter::default() },
            change_streams: register! { "change_streams_open", "Change streams open in this process (GET /v1/changes and the console's live updates)",
            Gauge::default() },
            catch_up_mark_age: register! { "catch_up_high_water_mark_age_seconds", "How far behind catch-up is: age of the time up to which it has read Seam's log (-1: not yet)",
            GaugeF64::default() },
            catch_up_success_age: register! { "catch_up_last_success_age_seconds", "Since the last successful catch-up run (-1: none yet)",
            GaugeF64::default() },
            refetches_pending: register! { "refetches_pending", "Re-fetches waiting or in flight (not dead)",
            Gauge::default() },
            refetches_in_flight: register! { "refetches_in_flight", "Re-fetches claimed by a worker right now",
            Gauge::default() },
            oldest_pending_age: register! { "oldest_pending_refetch_age_seconds", "Age of the oldest unserved re-fetch request (0 when none)",
            GaugeF64::default() },
            dead_letters: register! { "dead_letters", "Re-fetches given up on, waiting for an operator",
            Gauge::default() },
            last_webhook_age: register! { "last_webhook_age_seconds", "Seconds since the last accepted webhook (-1 when none yet)",
            GaugeF64::default() },
            seam_breaker_state: register! { "seam_breaker_state", "The Seam circuit breaker: 0 closed, 1 open (no calls), 2 probing, 3 ramping up",
            Gauge::default() },
            seam_breaker_opened: register! { "seam_breaker_opened", "Times the Seam circuit breaker opened after consecutive failures",
            Counter::default() },
            registry: r,
        }
    }

    pub fn delivery(&self, outcome: &'static str) {
        self.webhook_deliveries.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn seam_call(&self, labels: SeamLabels, elapsed: Duration) {
        self.seam_request_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.seam_requests.get_or_create(&labels).inc();
    }

    pub fn worker_error(&self, kind: WorkerError) {
        self.worker_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn backup_pull(&self, outcome: BackupPullOutcome) {
        self.backup_pulls.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn task_failure(&self, task: Task) {
        self.task_failures.get_or_create(&TaskLabel { task }).inc();
    }

    /// Sets the queue gauges from `queue` (read from Postgres at scrape time) and the
    /// breaker's from `breaker`, then renders everything.
    pub fn render(&self, queue: &QueueStatus, breaker: Option<&BreakerView>) -> String {
        if let Some(view) = breaker {
            self.seam_breaker_state.set(view.state.gauge());
            let counted = self.seam_breaker_opened.get();
            self.seam_breaker_opened.inc_by(view.times_opened.saturating_sub(counted));
        }
        self.refetches_pending.set(queue.pending);
        self.refetches_in_flight.set(queue.in_flight);
        self.oldest_pending_age.set(queue.oldest_pending_age_seconds.unwrap_or(0.0));
        self.dead_letters.set(queue.dead_letters);
        self.last_webhook_age.set(queue.last_webhook_age_seconds.unwrap_or(-1.0));
        self.catch_up_mark_age.set(queue.catch_up_mark_age_seconds.unwrap_or(-1.0));
        self.catch_up_success_age.set(queue.catch_up_success_age_seconds.unwrap_or(-1.0));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}
