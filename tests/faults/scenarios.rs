//! The eight scenarios of issue 8. Each sends a known set of deliveries while its
//! fault happens, reports its own figures, and ends with `check::settle` (drain,
//! graceful stop, accounting).
//!
//! Waits poll a condition until a deadline; the only sleeps are the faults' own
//! durations (how long Seam or Postgres stays down, how long a body takes to arrive).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::seq::SliceRandom;

use crate::Ctx;
use crate::check::{self, claims_held, pending};
use crate::db;
use crate::load::{self, Delivery, Load, LoadSpec, Outcome, Record, Send, SlowDelivery, new_code, random_truth};
use crate::service::Service;
use test_kit::Mode;

/// The longest wait for a point mid-load.
const MID_LOAD: Duration = Duration::from_secs(120);

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Attempts answered 2xx with this `status` (`accepted`, `duplicate`).
fn answered(records: &[Record], label: &str) -> usize {
    records
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.is_2xx() && matches!(&a.outcome, Outcome::Answered { label: l, .. } if l == label))
        .count()
}

/// Sum of a Prometheus counter's series whose labels contain every `filter`.
async fn metric_sum(base_url: &str, name: &str, filters: &[&str]) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{base_url}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Rows waiting in the queue, the attempts they made in all, and the most by one.
async fn queue_attempts(ctx: &Ctx) -> anyhow::Result<(i64, i64, i32)> {
    Ok(sqlx::query_as(
        "SELECT count(*), COALESCE(sum(attempts), 0)::bigint, COALESCE(max(attempts), 0)
         FROM access_code_refetches WHERE dead_lettered_at IS NULL",
    )
    .fetch_one(&ctx.pool)
    .await?)
}

/// Scenario 1: SIGKILL mid-load and restart, several times.
pub async fn kill_restart(ctx: &mut Ctx) -> anyhow::Result<()> {
    // Seam answers in 50 ms: a kill finds fetches in flight, their claims orphaned.
    ctx.seam.set_mode(Mode::Slow(Duration::from_millis(50)));
    let n = 600 * ctx.profile.scale;
    let plan = ctx.simple_plan(n, n / 4);
    let mut service = Service::start(ctx.service_config(&[])).await?;
    let load = Load::start(ctx.paced(plan, vec![service.webhook()]), ctx.seam.handle());
    let kills = ctx.profile.kills;
    let (mut orphaned, mut down) = (0, Vec::new());
    for k in 1..=kills {
        load.wait_acked(n * k / (kills + 1), MID_LOAD).await?;
        service.sigkill();
        let killed = Instant::now();
        orphaned += claims_held(ctx).await?;
        // Down for a moment: deliveries meet refused connections meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        service.launch().await?;
        down.push(secs(killed.elapsed()));
    }
    let records = load.finish().await?;
    ctx.seam.set_mode(Mode::Normal);
    ctx.figure("SIGKILLs, each followed by a restart", kills);
    ctx.figure("down per kill (SIGKILL → ready again)", down.join(", "));
    ctx.figure("claims the killed processes held (taken over after their lease)", orphaned);
    ctx.figure("2xx answers `duplicate` (stored, but the answer was lost to a kill)", answered(&records, "duplicate"));
    check::settle(ctx, &records, &mut [&mut service], false).await
}

/// Scenario 2: Postgres stopped and started mid-load: the suite's own cluster, never
/// the developer's.
pub async fn postgres_restart(ctx: &mut Ctx) -> anyhow::Result<()> {
    let cluster = match &ctx.cluster {
        Ok(cluster) => cluster.clone(),
        Err(reason) => {
            ctx.skipped = Some(reason.clone());
            return Ok(());
        }
    };
    let n = 600 * ctx.profile.scale;
    let plan = ctx.simple_plan(n, n / 4);
    let mut service = Service::start(ctx.service_config(&[])).await?;
    let pid = service.pid();
    let load = Load::start(ctx.paced(plan, vec![service.webhook()]), ctx.seam.handle());
    load.wait_acked(n / 3, MID_LOAD).await?;

    // From here on, Postgres is started again whatever happens.
    let guard = db::PostgresGuard(cluster.clone());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let readyz = format!("{}/readyz", service.url());
    let stopping = Instant::now();
    cluster.stop().await?;
    let down = Instant::now();
    let mut readyz_answers: BTreeMap<String, usize> = BTreeMap::new();
    while down.elapsed() < ctx.profile.postgres_outage {
        let answer =
            http.get(&readyz).send().await.map_or_else(|_| "no answer".to_owned(), |a| a.status().as_u16().to_string());
        *readyz_answers.entry(answer).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let starting = Instant::now();
    cluster.start().await?;
    let up = Instant::now();
    // It recovers by itself: /readyz answers 200 again, same process.
    let mut recovered = None;
    while up.elapsed() < MID_LOAD {
        if http.get(&readyz).send().await.is_ok_and(|a| a.status().is_success()) {
            recovered = Some(up.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(guard);
    ctx.check(recovered.is_some(), "/readyz did not answer 200 again after Postgres came back");
    ctx.check(service.running() && service.pid() == pid, "the service did not survive the outage in one piece");
    let records = load.finish().await?;

    let attempts: Vec<&load::Attempt> = records.iter().flat_map(|r| &r.attempts).collect();
    let is_503 = |a: &&&load::Attempt| matches!(a.outcome, Outcome::Answered { status: 503, .. });
    let answered_503 = attempts.iter().filter(is_503).count();
    let in_outage = attempts.iter().filter(is_503).filter(|a| a.at >= stopping && a.at < up).count();
    let labels: BTreeMap<String, usize> = attempts.iter().filter(is_503).fold(BTreeMap::new(), |mut m, a| {
        if let Outcome::Answered { label, .. } = &a.outcome {
            *m.entry(label.clone()).or_default() += 1;
        }
        m
    });
    ctx.figure(
        format!("Postgres (the suite's own cluster, {}, port {})", cluster.version, cluster.port),
        format!(
            "stop took {}, down {} (stopped → start), start took {}",
            secs(down - stopping),
            secs(starting - down),
            secs(up - starting)
        ),
    );
    let mut waits: Vec<f64> = attempts.iter().filter(is_503).map(|a| a.took.as_secs_f64() * 1e3).collect();
    waits.sort_by(f64::total_cmp);
    ctx.figure(
        "503 answers",
        format!(
            "{answered_503} ({in_outage} to attempts sent from stop to start), bodies {labels:?}, \
             answered in p50 {:.0} ms, max {:.0} ms",
            check::percentile(&waits, 0.5),
            waits.last().copied().unwrap_or(f64::NAN)
        ),
    );
    let during: Vec<&&load::Attempt> = attempts.iter().filter(|a| a.at >= down && a.at < starting).collect();
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    ctx.figure(
        "attempts sent while it was down (stopped → start)",
        format!(
            "{}: 503 {}, 2xx {} (answered after the start began), no answer {}; slowest answer {}",
            during.len(),
            during.iter().filter(|a| is_503(a)).count(),
            during.iter().filter(|a| a.is_2xx()).count(),
            during.iter().filter(|a| matches!(a.outcome, Outcome::Failed(_))).count(),
            secs(slowest)
        ),
    );
    // An acknowledgement needs a commit: no 2xx can leave while Postgres is stopped.
    let acked_while_down = attempts.iter().filter(|a| a.is_2xx() && a.ended() > down && a.ended() < starting).count();
    ctx.check(
        acked_while_down == 0,
        format!("{acked_while_down} deliveries were answered 2xx while Postgres was stopped"),
    );
    ctx.figure("/readyz while Postgres was down", format!("{readyz_answers:?}"));
    if let Some(recovered) = recovered {
        ctx.figure("/readyz 200 again after Postgres started (no restart of the service)", secs(recovered));
    }
    ctx.check(answered_503 > 0, "no delivery was answered 503 while Postgres was down");
    ctx.check(readyz_answers.contains_key("503"), "/readyz never answered 503 while Postgres was down");
    check::settle(ctx, &records, &mut [&mut service], false).await
}

/// Scenario 3: Seam refuses connections, then answers 500s, then comes back.
pub async fn seam_down(ctx: &mut Ctx) -> anyhow::Result<()> {
    let scale = ctx.profile.scale;
    let outage = ctx.profile.seam_outage;
    let (base, max) =
        (Duration::from_millis(ctx.profile.backoff_base_ms), Duration::from_millis(ctx.profile.backoff_max_ms));
    let mut service = Service::start(ctx.service_config(&[])).await?;
    let targets = vec![service.webhook()];
    let spec = |ctx: &Ctx, groups| LoadSpec {
        groups,
        targets: targets.clone(),
        senders: ctx.profile.senders,
        rate: None,
        give_up_after: ctx.profile.give_up_after,
    };
    let one_each = |ctx: &mut Ctx, codes: &[String]| -> Vec<Vec<Send>> {
        codes
            .iter()
            .map(|code| {
                vec![Send { delivery: Delivery::random(code, &mut ctx.rng), truth: Some(random_truth(&mut ctx.rng)) }]
            })
            .collect()
    };
    let mut records = Vec::new();

    // Seam up: a first state for every code.
    let mut codes: Vec<String> = (0..100 * scale).map(|_| new_code()).collect();
    let plan = one_each(ctx, &codes);
    records.extend(Load::start(spec(ctx, plan), ctx.seam.handle()).finish().await?);
    check::drain(ctx).await;
    let calls_up = ctx.seam.calls();

    // Connection refused: every code changes, and new ones appear.
    ctx.seam.go_down().await?;
    let down = Instant::now();
    let refused_before =
        metric_sum(&service.url(), "seam_access_sync_seam_requests_total", &["status=\"none\""]).await?;
    codes.extend((0..50 * scale).map(|_| new_code()));
    let mut plan = one_each(ctx, &codes);
    plan.shuffle(&mut ctx.rng);
    let sent = plan.len();
    let phase = Load::start(spec(ctx, plan), ctx.seam.handle()).finish().await?;
    let intake = down.elapsed();
    let acked = phase.iter().filter(|r| r.acked.is_some()).count();
    records.extend(phase);
    ctx.figure("deliveries acknowledged while Seam refused connections", format!("{acked}/{sent} in {}", secs(intake)));
    ctx.check(intake < outage, format!("intake while Seam was down took {} (longer than the outage)", secs(intake)));
    tokio::time::sleep_until((down + outage).into()).await;
    let (waiting, attempts, most) = queue_attempts(ctx).await?;
    let refused = metric_sum(&service.url(), "seam_access_sync_seam_requests_total", &["status=\"none\""]).await?
        - refused_before;
    let bound = check::backoff_bound(outage, base, max);
    ctx.figure(
        format!("Seam refusing connections for {}", secs(outage)),
        format!(
            "{waiting} codes waiting; {refused} connection attempts ({attempts} claims) = {:.1} per code, \
             at most {most} for one code (backoff allows ≤ {bound})",
            refused / waiting.max(1) as f64
        ),
    );
    ctx.check(waiting as usize == codes.len(), format!("{waiting} codes waiting, expected {}", codes.len()));
    ctx.check(most as u64 <= bound, format!("a code was tried {most} times in {}: no backoff?", secs(outage)));
    ctx.check(refused > 0.0, "no connection attempt while Seam was down");

    // 500s: some codes change again, a few new ones appear.
    ctx.seam.set_mode(Mode::Status(500));
    ctx.seam.come_up().await?;
    let errors_from = Instant::now();
    let (per_code_before, answered_before) = (ctx.seam.calls_per_code(), ctx.seam.answered(500));
    let mut changed: Vec<String> = codes.iter().step_by(3).cloned().collect();
    let fresh: Vec<String> = (0..25 * scale).map(|_| new_code()).collect();
    changed.extend(fresh.iter().cloned());
    codes.extend(fresh);
    let plan = one_each(ctx, &changed);
    records.extend(Load::start(spec(ctx, plan), ctx.seam.handle()).finish().await?);
    tokio::time::sleep_until((errors_from + outage).into()).await;
    let waiting = pending(ctx).await?;
    let answered_500 = ctx.seam.answered(500) - answered_before;
    let per_code = ctx.seam.calls_per_code();
    let most = per_code.iter().map(|(code, n)| n - per_code_before.get(code).copied().unwrap_or(0)).max().unwrap_or(0);
    ctx.figure(
        format!("Seam answering 500 for {}", secs(outage)),
        format!(
            "{waiting} codes waiting; {answered_500} calls = {:.1} per code, at most {most} for one code \
             (backoff allows ≤ {bound})",
            answered_500 as f64 / waiting.max(1) as f64
        ),
    );
    ctx.check(most <= bound, format!("a code was called {most} times in {}: no backoff?", secs(outage)));
    ctx.check(answered_500 > 0, "no call while Seam answered 500");

    // Back: the mirror catches up.
    let calls_before_back = ctx.seam.calls();
    ctx.seam.set_mode(Mode::Normal);
    let back = Instant::now();
    if check::drain(ctx).await.is_some() {
        ctx.figure(
            "mirror caught up after Seam came back",
            format!("{} ({} calls for {} codes)", secs(back.elapsed()), ctx.seam.calls() - calls_before_back, waiting),
        );
    }
    ctx.figure("Seam calls while it was up at first", calls_up);
    check::settle(ctx, &records, &mut [&mut service], false).await
}

/// Scenario 4: Seam slow: intake stays fast, the worker's concurrency bound holds.
pub async fn seam_slow(ctx: &mut Ctx) -> anyhow::Result<()> {
    let slow = ctx.profile.seam_slow;
    let concurrency = 4;
    ctx.seam.set_mode(Mode::Slow(slow));
    let mut service = Service::start(ctx.service_config(&[("APP_WORKER__CONCURRENCY", "4")])).await?;
    let n = 200 * ctx.profile.scale;
    let plan = ctx.simple_plan(n, n / 3);
    let mut spec = ctx.paced(plan, vec![service.webhook()]);
    spec.rate = Some(25.0);
    let began = Instant::now();
    let records = Load::start(spec, ctx.seam.handle()).finish().await?;
    let ended = Instant::now();
    let latencies = check::ack_latencies(&records, began, ended);
    let (p50, p99, max) = (
        check::percentile(&latencies, 0.5),
        check::percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    let waiting = pending(ctx).await?;
    let calls = ctx.seam.calls();
    ctx.figure(
        format!("ack latency while Seam took {} per answer", secs(slow)),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({} answers)", latencies.len()),
    );
    ctx.figure(
        "while slow",
        format!("{calls} Seam calls in {}; {waiting} codes still waiting when the load ended", secs(ended - began)),
    );
    ctx.check(
        p99 < slow.as_secs_f64() * 1e3,
        format!("ack p99 {p99:.0} ms is not below Seam's {}: intake waits on Seam?", secs(slow)),
    );
    ctx.check(waiting > 0, "the queue never backed up: Seam was not slow enough to test the bound");
    ctx.seam.set_mode(Mode::Normal);
    check::settle(ctx, &records, &mut [&mut service], false).await?;
    let most = ctx.seam.max_in_flight();
    ctx.figure("Seam requests in flight at most", format!("{most} (worker.concurrency = {concurrency})"));
    ctx.check(
        most <= concurrency,
        format!("{most} Seam requests in flight at once, above worker.concurrency = {concurrency}"),
    );
    Ok(())
}

/// Scenario 5: Every delivery sent 3 times, concurrently, in random order.
pub async fn duplicates(ctx: &mut Ctx) -> anyhow::Result<()> {
    let scale = ctx.profile.scale;
    let codes: Vec<String> = (0..100 * scale).map(|_| new_code()).collect();
    // Copies race each other: every code's truth is set before any is sent.
    for code in &codes {
        ctx.seam.set_code(code, random_truth(&mut ctx.rng).access_code(code));
    }
    let deliveries: Vec<Arc<Delivery>> =
        (0..300 * scale).map(|i| Delivery::random(&codes[i % codes.len()], &mut ctx.rng)).collect();
    let mut groups: Vec<Vec<Send>> =
        deliveries.iter().flat_map(|d| (0..3).map(|_| vec![Send { delivery: d.clone(), truth: None }])).collect();
    groups.shuffle(&mut ctx.rng);
    let mut service = Service::start(ctx.service_config(&[])).await?;
    let spec = LoadSpec {
        groups,
        targets: vec![service.webhook()],
        senders: 24,
        rate: None,
        give_up_after: ctx.profile.give_up_after,
    };
    let records = Load::start(spec, ctx.seam.handle()).finish().await?;
    let mut answers: HashMap<&str, (usize, usize)> = HashMap::new();
    for record in &records {
        let entry = answers.entry(record.delivery.msg_id.as_str()).or_default();
        match record.acked.as_deref() {
            Some("accepted") => entry.0 += 1,
            Some("duplicate") => entry.1 += 1,
            _ => {}
        }
    }
    let exactly_one = answers.values().filter(|(accepted, duplicate)| (*accepted, *duplicate) == (1, 2)).count();
    ctx.figure(
        "sends",
        format!(
            "{} (3 × {} deliveries): {} answered `accepted`, {} `duplicate`",
            records.len(),
            deliveries.len(),
            answered(&records, "accepted"),
            answered(&records, "duplicate")
        ),
    );
    ctx.figure(
        "deliveries with exactly one `accepted` and two `duplicate`",
        format!("{exactly_one}/{}", deliveries.len()),
    );
    ctx.check(exactly_one == deliveries.len(), "a delivery was accepted more or less than once among its copies");
    check::settle(ctx, &records, &mut [&mut service], false).await
}

/// Scenario 6: Several events per code (increasing `occurred_at`, Seam's truth changing before
/// each), delivered in reverse order for half the codes and in random order for the rest.
pub async fn out_of_order(ctx: &mut Ctx) -> anyhow::Result<()> {
    let per_code = if ctx.soak() { 6 } else { 4 };
    let codes = 100 * ctx.profile.scale;
    let base = Utc::now() - chrono::Duration::minutes(10);
    let mut newest: HashMap<String, String> = HashMap::new();
    let mut groups = Vec::new();
    for c in 0..codes {
        let code = new_code();
        let events: Vec<Arc<Delivery>> = (0..per_code)
            .map(|j| {
                let at = base + chrono::Duration::seconds(j as i64) + chrono::Duration::milliseconds(c as i64);
                Delivery::new(&code, load::EVENT_TYPES[j % load::EVENT_TYPES.len()], at)
            })
            .collect();
        newest.insert(code.clone(), events[per_code - 1].event_id.clone());
        let mut order: Vec<usize> = (0..per_code).collect();
        if c % 2 == 0 {
            order.reverse();
        } else {
            order.shuffle(&mut ctx.rng);
        }
        let group: Vec<Send> = order
            .into_iter()
            .map(|j| Send { delivery: events[j].clone(), truth: Some(random_truth(&mut ctx.rng)) })
            .collect();
        groups.push(group);
    }
    let mut service = Service::start(ctx.service_config(&[])).await?;
    let spec = LoadSpec {
        groups,
        targets: vec![service.webhook()],
        senders: ctx.profile.senders,
        rate: None,
        give_up_after: ctx.profile.give_up_after,
    };
    let records = Load::start(spec, ctx.seam.handle()).finish().await?;
    ctx.figure("codes × events", format!("{codes} × {per_code}, half reversed, half shuffled"));
    check::settle(ctx, &records, &mut [&mut service], false).await?;
    let named: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT access_code_id, last_event_id FROM access_codes").fetch_all(&ctx.pool).await?;
    let right = named.iter().filter(|(code, event)| newest.get(code) == event.as_ref()).count();
    ctx.figure("mirror rows naming the code's newest event (by occurred_at)", format!("{right}/{codes}"));
    ctx.check(right == codes, "a mirror row names an older event than the code's newest");
    Ok(())
}

/// Scenario 7: Two instances on one database, the load spread over both, one SIGKILLed for good.
pub async fn two_instances(ctx: &mut Ctx) -> anyhow::Result<()> {
    // Seam answers in 50 ms: B dies with fetches in flight, their claims orphaned.
    ctx.seam.set_mode(Mode::Slow(Duration::from_millis(50)));
    let config = ctx.service_config(&[]);
    let mut a = Service::start(config.clone()).await?;
    let mut b = Service::start(config).await?;
    let n = 600 * ctx.profile.scale;
    let plan = ctx.simple_plan(n, n / 4);
    let load = Load::start(ctx.paced(plan, vec![a.webhook(), b.webhook()]), ctx.seam.handle());
    load.wait_acked(n * 2 / 5, MID_LOAD).await?;
    b.sigkill();
    let killed = Instant::now();
    let held = claims_held(ctx).await?;
    let records = load.finish().await?;
    ctx.seam.set_mode(Mode::Normal);
    let attempts: Vec<&load::Attempt> = records.iter().flat_map(|r| &r.attempts).collect();
    let ok_by = |target: usize| attempts.iter().filter(|a| a.target == target && a.is_2xx()).count();
    let refused_after =
        attempts.iter().filter(|a| a.target == 1 && a.at >= killed && matches!(a.outcome, Outcome::Failed(_))).count();
    ctx.figure("2xx answered by A / by B (killed)", format!("{} / {}", ok_by(0), ok_by(1)));
    ctx.figure("attempts that met the dead B (each retried until it reached A)", refused_after);
    ctx.figure("claims held (A's and B's) when B died", held);
    ctx.check(ok_by(1) > 0 && ok_by(0) > 0, "the load was not spread over both instances");
    check::settle(ctx, &records, &mut [&mut a, &mut b], false).await
}

/// Scenario 8: SIGTERM under load: requests in flight are answered, fetches in flight finish,
/// nothing acknowledged is lost, no claim is left; then a restart finishes the load.
pub async fn graceful_shutdown(ctx: &mut Ctx) -> anyhow::Result<()> {
    // Slow enough that fetches are in flight when SIGTERM comes.
    ctx.seam.set_mode(Mode::Slow(Duration::from_millis(300)));
    let mut service = Service::start(ctx.service_config(&[])).await?;
    let n = 600 * ctx.profile.scale;
    let plan = ctx.simple_plan(n, n / 4);
    let load = Load::start(ctx.paced(plan, vec![service.webhook()]), ctx.seam.handle());
    load.wait_acked(n * 2 / 5, MID_LOAD).await?;

    // Requests certainly in flight: their bodies are still arriving.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let code = new_code();
        ctx.seam.set_code(&code, random_truth(&mut ctx.rng).access_code(&code));
        slow.push(SlowDelivery::begin(service.port, Delivery::random(&code, &mut ctx.rng)).await?);
    }
    // Lets the service read their headers before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fetches_in_flight = ctx.seam.in_flight();
    let claims_before = claims_held(ctx).await?;
    let term = Instant::now();
    service.sigterm()?;
    // The shutdown is under way while the bodies are still arriving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow_records = futures::future::join_all(slow.into_iter().map(SlowDelivery::finish)).await;
    let exit = service.wait_exit(Duration::from_secs(30)).await;
    let stopped_in = term.elapsed();
    let held_after = claims_held(ctx).await?;
    let claimed_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access_code_refetches WHERE claim_token IS NOT NULL")
            .fetch_one(&ctx.pool)
            .await?;
    let slow_ok = slow_records.iter().filter(|r| r.acked.as_deref() == Some("accepted")).count();
    ctx.figure("at SIGTERM", format!("{fetches_in_flight} Seam fetches in flight, {claims_before} claims held"));
    ctx.figure(
        "deliveries whose body was still arriving at SIGTERM, answered 200 `accepted`",
        format!(
            "{slow_ok}/{}: {:?}",
            slow_records.len(),
            slow_records.iter().map(|r| r.attempts[0].outcome.describe()).collect::<Vec<_>>()
        ),
    );
    match &exit {
        Ok(status) => ctx.figure("SIGTERM → exit", format!("{}, {status}", secs(stopped_in))),
        Err(e) => ctx.fail(format!("after SIGTERM: {e:#}")),
    }
    ctx.check(exit.as_ref().is_ok_and(|s| s.success()), "the service did not exit 0 after SIGTERM");
    ctx.check(slow_ok == slow_records.len(), "a request in flight at SIGTERM was not answered 200");
    ctx.figure("claims left after the stop", format!("{held_after} held, {claimed_after} with a claim token"));
    ctx.check(held_after == 0 && claimed_after == 0, "claims were left behind by the graceful stop");

    // Restart; the load (still retrying) finishes.
    let restarted = Instant::now();
    service.launch().await?;
    ctx.figure("down (SIGTERM → ready again)", secs(restarted.elapsed() + stopped_in));
    let mut records = load.finish().await?;
    let in_flight: Vec<&load::Attempt> =
        records.iter().flat_map(|r| &r.attempts).filter(|a| a.at < term && a.ended() > term).collect();
    let answered_in_flight = in_flight.iter().filter(|a| matches!(a.outcome, Outcome::Answered { .. })).count();
    ctx.figure(
        "load attempts in flight at SIGTERM: answered / connection closed",
        format!("{answered_in_flight} / {}", in_flight.len() - answered_in_flight),
    );
    // A slow delivery that failed is a failure above; send it again so the rest of
    // the accounting still adds up.
    let (done, retry): (Vec<Record>, Vec<Record>) = slow_records.into_iter().partition(|r| r.acked.is_some());
    records.extend(done);
    if !retry.is_empty() {
        let groups = retry.into_iter().map(|r| vec![Send { delivery: r.delivery, truth: None }]).collect();
        records.extend(Load::start(ctx.paced(groups, vec![service.webhook()]), ctx.seam.handle()).finish().await?);
    }
    ctx.seam.set_mode(Mode::Normal);
    check::settle(ctx, &records, &mut [&mut service], false).await
}

/// Resident and peak memory of a process, in bytes (0 once it is gone).
fn memory_of(pid: u32) -> (u64, u64) {
    test_kit::process::memory(pid).map_or((0, 0), |m| (m.resident, m.peak))
}

/// A connection that sends a request head one byte a second and never finishes it;
/// returns how long after its first byte the service closed it (None: still open
/// after `give_up`).
async fn dribble_headers(port: u16, give_up: Duration) -> anyhow::Result<Option<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").await?;
    let started = Instant::now();
    let mut buffer = [0u8; 512];
    while started.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Ok(Some(started.elapsed())),
                Ok(_) => {} // a 408 before the close
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if stream.write_all(b"a").await.is_err() {
                    return Ok(Some(started.elapsed()));
                }
            }
        }
    }
    Ok(None)
}

/// Scenario 9: what an attacker without a secret can do to the open port (issue 12):
/// 1,000 connections dribbling headers and 20,000 requests with invented methods,
/// while a valid webhook must still be answered; then SIGTERM with connections open.
pub async fn open_port(ctx: &mut Ctx) -> anyhow::Result<()> {
    const SLOW: usize = 1000;
    const METHODS: usize = 20_000;
    let header_timeout = Duration::from_secs(10);
    let deadline = Duration::from_secs(20);
    let mut service = Service::start(ctx.service_config(&[
        ("APP_SERVER__RUN_MODE", "server"),
        ("APP_SERVER__HEADER_READ_TIMEOUT_MS", "10000"),
        ("APP_SERVER__SHUTDOWN_DEADLINE_MS", "20000"),
        // Room above the 1,000 slow connections plus the senders' own: at the cap new
        // connections queue (tests/api/limits.rs), which would time the queue here.
        ("APP_SERVER__MAX_CONNECTIONS", "4096"),
    ]))
    .await?;
    let (port, pid) = (service.port, service.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?);
    let (rss_before, _) = memory_of(pid);

    let slow: Vec<_> = (0..SLOW).map(|_| tokio::spawn(dribble_headers(port, header_timeout * 3))).collect();
    // 20,000 distinct 1,000-byte methods, 16 at a time.
    let http = reqwest::Client::new();
    let url = format!("{}/healthz", service.url());
    let methods = futures::StreamExt::map(futures::stream::iter(0..METHODS), |i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let method = reqwest::Method::from_bytes(format!("M{i:05}{}", "X".repeat(994)).as_bytes()).unwrap();
            http.request(method, &url).send().await.map(|a| a.status().as_u16()).unwrap_or(0)
        }
    });
    let statuses: Vec<u16> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(methods, 16)).await;
    let refused = statuses.iter().filter(|s| **s == 405).count();

    // A valid webhook meanwhile: the slow connections are still open.
    let code = new_code();
    let delivery = Delivery::random(&code, &mut ctx.rng);
    let body = delivery.body.clone();
    let timestamp = Utc::now().timestamp();
    let mut request = http.post(service.webhook()).body(body.clone());
    for (name, value) in test_kit::svix_headers(test_kit::SECRET, &delivery.msg_id, timestamp, body.as_bytes()) {
        request = request.header(name, value);
    }
    let webhook = request.send().await.map(|a| a.status().as_u16()).unwrap_or(0);
    let metrics = http.get(format!("{}/metrics", service.url())).send().await?.text().await?;
    let (rss_loaded, _) = memory_of(pid);

    let mut closed_in = Vec::with_capacity(SLOW);
    for task in slow {
        closed_in.push(task.await??);
    }
    let still_open = closed_in.iter().filter(|c| c.is_none()).count();
    let mut times: Vec<Duration> = closed_in.iter().flatten().copied().collect();
    times.sort();
    let slowest = times.last().copied().unwrap_or_default();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let (rss_after, rss_peak) = memory_of(pid);

    // SIGTERM with connections open (dribbling again).
    let open: Vec<_> = (0..200).map(|_| tokio::spawn(dribble_headers(port, header_timeout * 3))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let term = Instant::now();
    service.sigterm()?;
    let exit = service.wait_exit(deadline + Duration::from_secs(10)).await;
    let stopped_in = term.elapsed();
    for task in open {
        let _ = task.await;
    }

    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    ctx.figure(
        "RSS before → under load → after → peak",
        format!("{} → {} → {} → {}", mib(rss_before), mib(rss_loaded), mib(rss_after), mib(rss_peak)),
    );
    ctx.figure(format!("{METHODS} invented methods answered 405"), refused);
    ctx.figure("/metrics size after them", format!("{} bytes", metrics.len()));
    ctx.figure("valid webhook during the attack", webhook);
    ctx.figure(
        format!("{SLOW} dribbling connections closed after (median, slowest)"),
        format!("{}, {}", secs(median), secs(slowest)),
    );
    ctx.figure("SIGTERM with 200 connections open → exit", secs(stopped_in));
    ctx.check(rss_peak <= 64 * 1024 * 1024, format!("peak RSS {} over 64 MiB", mib(rss_peak)));
    ctx.check(metrics.len() < 100 * 1024, format!("/metrics is {} bytes", metrics.len()));
    ctx.check(webhook == 200, format!("the valid webhook was answered {webhook}"));
    ctx.check(refused == METHODS, format!("{refused} of {METHODS} invented methods answered 405"));
    ctx.check(still_open == 0, format!("{still_open} dribbling connections still open after 30 s"));
    ctx.check(
        slowest <= header_timeout + Duration::from_secs(5),
        format!("a dribbling connection stayed open {}", secs(slowest)),
    );
    ctx.check(exit.as_ref().is_ok_and(|status| status.success()), format!("exit after SIGTERM: {exit:?}"));
    ctx.check(stopped_in <= deadline, format!("SIGTERM → exit took {}", secs(stopped_in)));
    Ok(())
}
