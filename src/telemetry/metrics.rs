//! Prometheus metrics, served at `GET /metrics` (`http::metrics`). One registry per application (no
//! globals); queue gauges are read from Postgres at scrape time, so every replica
//! reports the shared queue.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::store::admin::QueueStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/webhooks/seam`), never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeamLabels {
    /// `managed` or `unmanaged`.
    pub endpoint: &'static str,
    /// `found`, `gone`, `transient`, `key_rejected`, `rejected`.
    pub outcome: &'static str,
    /// The HTTP status, or `none` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    pub http_request_duration: Family<HttpLabels, Histogram>,
    pub seam_requests: Family<SeamLabels, Counter>,
    pub seam_request_duration: Family<SeamLabels, Histogram>,
    pub mirror_lag: Histogram,
    pub mirror_changes: Family<OutcomeLabel, Counter>,
    pub worker_errors: Family<KindLabel, Counter>,
    pub catch_up_runs: Family<KindLabel, Counter>,
    pub catch_up_events: Family<KindLabel, Counter>,
    pub sweep_refetches: Family<KindLabel, Counter>,
    catch_up_mark_age: Gauge<f64, AtomicU64>,
    catch_up_success_age: Gauge<f64, AtomicU64>,
    refetches_pending: Gauge,
    refetches_in_flight: Gauge,
    oldest_pending_age: Gauge<f64, AtomicU64>,
    dead_letters: Gauge,
    last_webhook_age: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("seam_access_sync");
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome: accepted, duplicate, or the rejection reason",
            webhook_deliveries.clone(),
        );
        let http_request_duration =
            Family::<HttpLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            http_request_duration.clone(),
        );
        let seam_requests = Family::<SeamLabels, Counter>::default();
        registry.register("seam_requests", "Seam API calls by endpoint, outcome and status", seam_requests.clone());
        let seam_request_duration =
            Family::<SeamLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "seam_request_duration_seconds",
            "Seam API call latency by endpoint, outcome and status",
            seam_request_duration.clone(),
        );
        let mirror_lag = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register(
            "mirror_lag_seconds",
            "Time from the oldest unserved webhook for a code to its mirror row being written",
            mirror_lag.clone(),
        );
        let mirror_changes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "mirror_writes",
            "Fetch results applied to the mirror: created, changed, deleted, unchanged, stale",
            mirror_changes.clone(),
        );
        let worker_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "worker_errors",
            "Worker failures that are not Seam's answers: step (database), claim_lost",
            worker_errors.clone(),
        );
        let catch_up_runs = Family::<KindLabel, Counter>::default();
        registry.register(
            "catch_up_runs",
            "Catch-up runs from Seam's event log by kind: completed, skipped (another replica), failed",
            catch_up_runs.clone(),
        );
        let catch_up_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "catch_up_events",
            "access_code.* events found by catch-up, by kind: new (no webhook brought them) or seen",
            catch_up_events.clone(),
        );
        let sweep_refetches = Family::<KindLabel, Counter>::default();
        registry.register(
            "sweep_refetches",
            "Re-fetches queued by sweeps, by kind: stuck, time_bound",
            sweep_refetches.clone(),
        );
        let catch_up_mark_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "catch_up_high_water_mark_age_seconds",
            "Age of the newest event catch-up has seen in Seam's log (-1: none yet)",
            catch_up_mark_age.clone(),
        );
        let catch_up_success_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "catch_up_last_success_age_seconds",
            "Since the last successful catch-up run (-1: none yet)",
            catch_up_success_age.clone(),
        );
        let refetches_pending = Gauge::default();
        registry.register("refetches_pending", "Re-fetches waiting or in flight (not dead)", refetches_pending.clone());
        let refetches_in_flight = Gauge::default();
        registry.register(
            "refetches_in_flight",
            "Re-fetches claimed by a worker right now",
            refetches_in_flight.clone(),
        );
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_pending_refetch_age_seconds",
            "Age of the oldest unserved re-fetch request (0 when none)",
            oldest_pending_age.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register("dead_letters", "Re-fetches given up on, waiting for an operator", dead_letters.clone());
        let last_webhook_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_webhook_age_seconds",
            "Seconds since the last accepted webhook (-1 when none yet)",
            last_webhook_age.clone(),
        );
        Metrics {
            registry,
            webhook_deliveries,
            http_request_duration,
            seam_requests,
            seam_request_duration,
            mirror_lag,
            mirror_changes,
            worker_errors,
            catch_up_runs,
            catch_up_events,
            sweep_refetches,
            catch_up_mark_age,
            catch_up_success_age,
            refetches_pending,
            refetches_in_flight,
            oldest_pending_age,
            dead_letters,
            last_webhook_age,
        }
    }

    pub fn delivery(&self, outcome: &'static str) {
        self.webhook_deliveries.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn seam_call(&self, labels: SeamLabels, elapsed: Duration) {
        self.seam_request_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.seam_requests.get_or_create(&labels).inc();
    }

    pub fn worker_error(&self, kind: &'static str) {
        self.worker_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// Sets the queue gauges from `queue` (read from Postgres at scrape time), then
    /// renders everything.
    pub fn render(&self, queue: &QueueStatus) -> String {
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
