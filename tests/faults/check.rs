//! The accounting after a scenario: the queue drains, every acknowledged delivery is
//! stored exactly once, every code's mirror row equals the stand-in's truth, no dead
//! letters, no claim left behind.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::types::Json;

use crate::Ctx;
use crate::load::{Outcome, Record};
use crate::service::Service;

/// The figures every scenario reports, one row of its table.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Distinct deliveries (msg ids).
    pub sent: usize,
    /// HTTP attempts, all deliveries.
    pub requests: usize,
    /// Distinct deliveries that got a 2xx.
    pub acked: usize,
    pub non_2xx: usize,
    pub conn_errors: usize,
    /// Distinct deliveries found in `seam_events`, exactly once, with their event id.
    pub in_db: usize,
    pub codes: usize,
    pub mirror_ok: usize,
    pub seam_calls: u64,
    pub dead_letters: usize,
}

impl Summary {
    pub const HEADER: &str = "| sent | requests | 2xx | retried (non-2xx + conn. errors) | in DB | mirror correct | Seam calls | dead letters |";
    pub const RULE: &str = "|---:|---:|---:|---:|---:|---:|---:|---:|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} ({} + {}) | {} | {}/{} | {} | {} |",
            self.sent,
            self.requests,
            self.acked,
            self.non_2xx + self.conn_errors,
            self.non_2xx,
            self.conn_errors,
            self.in_db,
            self.mirror_ok,
            self.codes,
            self.seam_calls,
            self.dead_letters
        )
    }
}

/// A mirror row, or a history entry (never `deleted`), as compared with Seam's truth.
#[derive(sqlx::FromRow)]
struct CodeRow {
    access_code_id: String,
    status: Option<String>,
    warnings: Json<Value>,
    errors: Json<Value>,
    deleted: bool,
}

/// Rows of the queue not dead-lettered.
pub async fn pending(ctx: &Ctx) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM access_code_refetches WHERE dead_lettered_at IS NULL")
        .fetch_one(&ctx.pool)
        .await?)
}

/// Claims held right now (`claimed_until` in the future).
pub async fn claims_held(ctx: &Ctx) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM access_code_refetches WHERE claimed_until > now()")
        .fetch_one(&ctx.pool)
        .await?)
}

/// Polls until the queue holds nothing but dead letters; returns how long it took.
/// A drain slower than 5 s is described (pending, claimed, backing off, every 5 s).
pub async fn drain(ctx: &mut Ctx) -> Option<Duration> {
    let started = Instant::now();
    let deadline = ctx.profile.drain_deadline;
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < deadline {
        let counts: Result<(i64, i64, i64), _> = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE claimed_until > now()),
                    count(*) FILTER (WHERE next_attempt_at > now())
             FROM access_code_refetches WHERE dead_lettered_at IS NULL",
        )
        .fetch_one(&ctx.pool)
        .await;
        match counts {
            Ok((0, _, _)) => {
                let took = started.elapsed();
                if took > Duration::from_secs(5) {
                    ctx.figure("queue while draining (pending: claimed, backing off)", samples.join("; "));
                }
                return Some(took);
            }
            Ok((pending, claimed, later)) if started.elapsed() >= next_sample => {
                samples.push(format!("{:.0} s {pending}: {claimed}, {later}", started.elapsed().as_secs_f64()));
                next_sample += Duration::from_secs(5);
            }
            Ok(_) => {}
            Err(e) => samples.push(format!("{:.0} s {e}", started.elapsed().as_secs_f64())),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sample: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "SELECT access_code_id, attempts, last_error FROM access_code_refetches
         WHERE dead_lettered_at IS NULL ORDER BY access_code_id LIMIT 3",
    )
    .fetch_all(&ctx.pool)
    .await
    .unwrap_or_default();
    ctx.fail(format!(
        "the queue did not drain within {deadline:?} (pending: claimed, backing off: {}); e.g. {sample:?}",
        samples.join("; ")
    ));
    None
}

/// The end of every scenario: drain, stop every running service gracefully (exit 0,
/// no claim left), then the accounting.
pub async fn settle(
    ctx: &mut Ctx,
    records: &[Record],
    services: &mut [&mut Service],
    expect_dead_letters: bool,
) -> anyhow::Result<()> {
    if let Some(took) = drain(ctx).await {
        ctx.figure("queue drained (after the load)", format!("{:.1} s", took.as_secs_f64()));
    }
    for service in services.iter_mut() {
        if !service.running() {
            continue;
        }
        service.sigterm()?;
        let started = Instant::now();
        match service.wait_exit(Duration::from_secs(30)).await {
            Ok(status) => {
                ctx.check(status.success(), format!("after SIGTERM the service exited with {status}, not 0"));
                ctx.figure("graceful stop at the end", format!("{:.2} s, {status}", started.elapsed().as_secs_f64()));
            }
            Err(e) => ctx.fail(format!("graceful stop at the end: {e}")),
        }
    }
    let held = claims_held(ctx).await?;
    ctx.check(held == 0, format!("{held} claim(s) left held after the services stopped"));
    // Each worker holds one claim at a time; a process killed leaves its claims to
    // expire. More than concurrency × processes started means claims nobody works on.
    let bound: i64 = services.iter().map(|s| s.worker_concurrency() * i64::from(s.starts)).sum();
    let most = ctx.claims_max.load(std::sync::atomic::Ordering::SeqCst);
    ctx.figure("claims held at once, at most", format!("{most} (workers × processes started: {bound})"));
    ctx.check(
        most <= bound,
        format!("{most} claims were held at once, more than the {bound} workers could hold: claims no worker works on"),
    );
    account(ctx, records, expect_dead_letters).await
}

/// Counts everything and checks it adds up; stores the summary in `ctx`.
pub async fn account(ctx: &mut Ctx, records: &[Record], expect_dead_letters: bool) -> anyhow::Result<()> {
    let mut summary = Summary::default();

    // Deliveries by msg id (a delivery may have been sent several times).
    let mut deliveries: BTreeMap<&str, (&Record, bool)> = BTreeMap::new();
    let mut unexpected: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        let entry = deliveries.entry(record.delivery.msg_id.as_str()).or_insert((record, false));
        entry.1 |= record.acked.is_some();
        for attempt in &record.attempts {
            summary.requests += 1;
            match &attempt.outcome {
                Outcome::Answered { status, .. } if (200..300).contains(status) => {}
                Outcome::Answered { status, label } => {
                    summary.non_2xx += 1;
                    if *status != 503 {
                        *unexpected.entry(format!("{status} {label}")).or_default() += 1;
                    }
                }
                Outcome::Failed(_) => summary.conn_errors += 1,
            }
        }
    }
    summary.sent = deliveries.len();
    summary.acked = deliveries.values().filter(|(_, acked)| *acked).count();
    ctx.check(unexpected.is_empty(), format!("answers other than 2xx and 503 to valid deliveries: {unexpected:?}"));
    let never: Vec<String> = deliveries
        .values()
        .filter(|(_, acked)| !acked)
        .take(5)
        .map(|(r, _)| {
            format!(
                "{} ({} attempts, last {:?})",
                r.delivery.msg_id,
                r.attempts.len(),
                r.attempts.last().map(|a| a.outcome.describe())
            )
        })
        .collect();
    ctx.check(
        summary.acked == summary.sent,
        format!("{} deliveries never got a 2xx, e.g. {never:?}", summary.sent - summary.acked),
    );

    // Every acknowledged delivery stored exactly once, under its event id; nothing else.
    let rows: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT delivery_id, event_id FROM seam_events").fetch_all(&ctx.pool).await?;
    let mut stored: HashMap<Option<String>, Vec<String>> = HashMap::new();
    for (delivery_id, event_id) in rows {
        stored.entry(delivery_id).or_default().push(event_id);
    }
    let (mut lost, mut wrong) = (Vec::new(), Vec::new());
    for (msg_id, (record, acked)) in &deliveries {
        match stored.get(&Some((*msg_id).to_owned())) {
            Some(events) if events.len() == 1 && events[0] == record.delivery.event_id => summary.in_db += 1,
            Some(events) => wrong.push(format!("{msg_id}: {events:?}")),
            None if *acked => lost.push((*msg_id).to_owned()),
            None => {}
        }
    }
    let strangers: Vec<_> =
        stored.keys().filter(|id| !id.as_deref().is_some_and(|id| deliveries.contains_key(id))).collect();
    ctx.check(
        lost.is_empty(),
        format!("{} acknowledged deliveries are not in seam_events: {:?}", lost.len(), &lost[..lost.len().min(5)]),
    );
    ctx.check(wrong.is_empty(), format!("deliveries stored more than once or with another event: {wrong:?}"));
    ctx.check(strangers.is_empty(), format!("events stored that no delivery sent: {strangers:?}"));

    // The mirror equals the stand-in's truth, code by code.
    let truths = ctx.seam.codes();
    let mirror: Vec<CodeRow> = sqlx::query_as(
        "SELECT access_code_id, status, warnings, errors, deleted_at IS NOT NULL AS deleted FROM access_codes",
    )
    .fetch_all(&ctx.pool)
    .await?;
    let mirror: HashMap<String, (Option<String>, Value, Value, bool)> =
        mirror.into_iter().map(|r| (r.access_code_id, (r.status, r.warnings.0, r.errors.0, r.deleted))).collect();
    summary.codes = truths.len();
    let mut mismatches = Vec::new();
    for (code, truth) in &truths {
        let status = truth["status"].as_str().unwrap_or_default();
        let expected = (Some(status.to_owned()), truth["warnings"].clone(), Value::Array(vec![]), false);
        match mirror.get(code) {
            Some(row) if *row == expected => summary.mirror_ok += 1,
            Some(row) => mismatches.push(format!(
                "{code}: mirror {:?} {} {}{}, Seam {} {}",
                row.0,
                row.1,
                row.2,
                if row.3 { " deleted" } else { "" },
                status,
                expected.1
            )),
            None => mismatches.push(format!("{code}: not in the mirror")),
        }
    }
    let extra: Vec<&String> = mirror.keys().filter(|code| !truths.contains_key(*code)).collect();
    ctx.check(
        mismatches.is_empty(),
        format!(
            "{} codes differ from Seam's truth, e.g. {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        ),
    );
    ctx.check(extra.is_empty(), format!("mirror rows for codes Seam never had: {extra:?}"));

    // The history's last entry per code is what the mirror holds.
    let history: Vec<CodeRow> = sqlx::query_as(
        "SELECT DISTINCT ON (access_code_id) access_code_id, status, warnings, errors, false AS deleted
         FROM access_code_history ORDER BY access_code_id, id DESC",
    )
    .fetch_all(&ctx.pool)
    .await?;
    let consistent = history
        .iter()
        .filter(|h| {
            mirror.get(&h.access_code_id).is_some_and(|m| m.0 == h.status && m.1 == h.warnings.0 && m.2 == h.errors.0)
        })
        .count();
    ctx.check(
        consistent == mirror.len(),
        format!("history's last entry matches the mirror for only {consistent} of {} codes", mirror.len()),
    );
    ctx.figure("history's last entry = mirror row", format!("{consistent}/{}", mirror.len()));

    // Dead letters.
    let dead: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT access_code_id, last_error FROM access_code_refetches WHERE dead_lettered_at IS NOT NULL",
    )
    .fetch_all(&ctx.pool)
    .await?;
    summary.dead_letters = dead.len();
    if !expect_dead_letters {
        ctx.check(dead.is_empty(), format!("{} dead letters, e.g. {:?}", dead.len(), dead.first()));
    }
    summary.seam_calls = ctx.seam.calls();
    ctx.summary = Some(summary);
    Ok(())
}

/// Percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Answered attempts' latencies in ms, sorted, of attempts that started in [from, to).
pub fn ack_latencies(records: &[Record], from: Instant, to: Instant) -> Vec<f64> {
    let mut latencies: Vec<f64> = records
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.at >= from && a.at < to && matches!(a.outcome, Outcome::Answered { .. }))
        .map(|a| a.took.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// The most attempts a code can make within `window` when every failure backs off
/// `base · 2^(attempt-1)` capped at `max`, times a jitter of at least 0.5 (the
/// worker's rule), plus one for an attempt on the window's edge.
pub fn backoff_bound(window: Duration, base: Duration, max: Duration) -> u64 {
    let mut elapsed = Duration::ZERO;
    let mut attempts = 1u64;
    loop {
        let exponent = (attempts - 1).min(30) as u32;
        let delay = base.saturating_mul(1 << exponent).min(max) / 2;
        elapsed += delay;
        if elapsed > window {
            return attempts + 1;
        }
        attempts += 1;
    }
}
