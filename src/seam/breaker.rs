//! The circuit breaker every call to Seam goes through, shared by all workspaces'
//! clients (one Seam, one view of its health).
//!
//! - **Closed**: calls go out. After `failures` consecutive failures (no answer, or
//!   a 5xx / 408), it opens.
//! - **Open**: no call goes out until the wait is over; the worker does not claim
//!   (queued codes keep their place and their attempt counts).
//! - **Probing**: once the wait is over, one call goes out. An answer (anything but
//!   a failure) starts the ramp; a failure opens it again for twice as long, up to
//!   `max_open`.
//! - **Ramping**: calls go out spaced, at a rate that doubles every tenth of
//!   `ramp`, from 2 a second, so a backlog does not hit a recovering Seam at once;
//!   then closed.
//!
//! Separately, a 429 with `Retry-After` pauses every call until then (not one code).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

use crate::config::BreakerSettings;

crate::text_enum::text_enum! {
    /// The breaker's state, for `/readyz`, `status` and the metric.
    pub enum BreakerState {
        Closed = "closed", Open = "open", Probing = "probing", Ramping = "ramping",
    }
}

impl BreakerState {
    /// The metric's value: 0 closed, 1 open, 2 probing, 3 ramping.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::Probing => 2,
            BreakerState::Ramping => 3,
        }
    }
}

/// How a call ended, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// Seam answered (any status but 5xx, 408 and 429): it is up.
    Answered,
    /// No answer, or a 5xx / 408.
    Failed,
    /// 429: pause every call for `retry_after` (at most `max_open`; `open` when it
    /// says nothing). Seam is up, but asks us to slow down.
    RateLimited { retry_after: Option<Duration> },
}

impl CallResult {
    /// What an HTTP status says of Seam's health.
    pub fn of_status(status: u16, retry_after: Option<Duration>) -> CallResult {
        match status {
            429 => CallResult::RateLimited { retry_after },
            408 | 500..=599 => CallResult::Failed,
            _ => CallResult::Answered,
        }
    }
}

/// Why a call was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCalled {
    /// Seam is expected to be callable again after about this long.
    pub retry_in: Duration,
    pub reason: &'static str,
}

/// What `/readyz` and `status` show.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerView {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Until the next probe (open) or the end of a 429 pause.
    pub wait: Option<Duration>,
    pub times_opened: u64,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant, waited: Duration },
    Probing { waited: Duration },
    Ramping { since: Instant, next_slot: Instant },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive_failures: u32,
    paused_until: Option<Instant>,
    times_opened: u64,
}

/// Shared by every clone of every workspace's client.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    /// Wakes those waiting in `ready` when the state changes.
    changed: Notify,
}

/// A call let through: report its result with `finish` (dropped unreported, as a
/// cancelled call, it frees the probe for the next caller).
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

/// Longest a caller is kept waiting inside `admit` (a ramp slot or the end of a
/// short pause); a longer wait answers `NotCalled` at once.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive_failures: 0,
                paused_until: None,
                times_opened: 0,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a call through, after waiting at most a second for a ramp slot or the end
    /// of a pause; `NotCalled` when Seam is considered down (or paused for longer).
    pub async fn admit(&self) -> Result<Permit<'_>, NotCalled> {
        loop {
            match self.try_admit(Instant::now())? {
                Admission::Go { probe } => return Ok(Permit { breaker: self, probe, done: false }),
                Admission::WaitFor(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn try_admit(&self, now: Instant) -> Result<Admission, NotCalled> {
        let mut inner = self.lock();
        if let Some(until) = inner.paused_until {
            if until > now {
                let wait = until - now;
                if wait > MAX_INLINE_WAIT {
                    return Err(NotCalled { retry_in: wait, reason: "Seam asked to slow down (429 Retry-After)" });
                }
                return Ok(Admission::WaitFor(wait));
            }
            inner.paused_until = None;
        }
        match inner.phase {
            Phase::Closed => Ok(Admission::Go { probe: false }),
            Phase::Open { until, waited } if until <= now => {
                inner.phase = Phase::Probing { waited };
                self.changed.notify_waiters();
                Ok(Admission::Go { probe: true })
            }
            Phase::Open { until, .. } => {
                Err(NotCalled { retry_in: until - now, reason: "Seam is failing: circuit open" })
            }
            Phase::Probing { .. } => {
                Err(NotCalled { retry_in: MAX_INLINE_WAIT, reason: "Seam is failing: circuit probing" })
            }
            Phase::Ramping { since, next_slot } => {
                let elapsed = now.saturating_duration_since(since);
                if elapsed >= self.settings.ramp() {
                    inner.phase = Phase::Closed;
                    self.changed.notify_waiters();
                    return Ok(Admission::Go { probe: false });
                }
                if next_slot > now {
                    return Ok(Admission::WaitFor(next_slot - now));
                }
                let spacing = self.ramp_spacing(elapsed);
                inner.phase = Phase::Ramping { since, next_slot: now + spacing };
                Ok(Admission::Go { probe: false })
            }
        }
    }

    /// The gap between two calls `elapsed` into the ramp: 2 calls a second, doubling
    /// every tenth of the ramp (over 2,000 a second by its end).
    fn ramp_spacing(&self, elapsed: Duration) -> Duration {
        let step = self.settings.ramp().as_secs_f64() / 10.0;
        let doublings = if step > 0.0 { (elapsed.as_secs_f64() / step).min(10.0) } else { 10.0 };
        Duration::from_secs_f64(0.5 / 2f64.powf(doublings))
    }

    fn record(&self, result: CallResult, probe: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        let before = state_of(&inner.phase);
        match result {
            CallResult::RateLimited { retry_after } => {
                let pause = retry_after.unwrap_or(self.settings.open()).min(self.settings.max_open());
                let until = now + pause;
                inner.paused_until = Some(inner.paused_until.map_or(until, |current| current.max(until)));
                // Seam answered: a probe that gets a 429 has shown it is up.
                inner.consecutive_failures = 0;
                if probe {
                    inner.phase = Phase::Ramping { since: now, next_slot: until };
                }
            }
            CallResult::Answered => {
                inner.consecutive_failures = 0;
                if probe || matches!(inner.phase, Phase::Probing { .. }) {
                    inner.phase = Phase::Ramping { since: now, next_slot: now };
                }
            }
            CallResult::Failed => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                match inner.phase {
                    Phase::Probing { waited } if probe => {
                        let waited = (waited * 2).min(self.settings.max_open());
                        inner.phase = Phase::Open { until: now + waited, waited };
                    }
                    Phase::Closed | Phase::Ramping { .. }
                        if inner.consecutive_failures >= self.settings.failures.max(1) =>
                    {
                        let waited = self.settings.open();
                        inner.phase = Phase::Open { until: now + waited, waited };
                        inner.times_opened += 1;
                    }
                    _ => {}
                }
            }
        }
        let after = state_of(&inner.phase);
        drop(inner);
        if before != after {
            match after {
                BreakerState::Open => tracing::warn!(
                    state = %after,
                    failures = self.settings.failures,
                    "Seam is failing: no calls until a probe succeeds"
                ),
                _ => tracing::info!(from = %before, state = %after, "Seam circuit breaker"),
            }
        }
        self.changed.notify_waiters();
    }

    /// A probe let through and then dropped unreported: the next caller may probe.
    fn release_probe(&self) {
        let mut inner = self.lock();
        if let Phase::Probing { waited } = inner.phase {
            inner.phase = Phase::Open { until: Instant::now(), waited };
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Returns once a call would be let through (or about to be: a probe is due),
    /// without taking it. The worker waits here before claiming, so that an outage
    /// leaves the queue untouched.
    pub async fn ready(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let inner = self.lock();
                let now = Instant::now();
                let paused = inner.paused_until.filter(|until| *until > now).map(|until| until - now);
                let phase = match inner.phase {
                    Phase::Open { until, .. } if until > now => Some(until - now),
                    // A probe is out: its answer decides (the wake-up comes with it).
                    Phase::Probing { .. } => Some(self.settings.max_open()),
                    _ => None,
                };
                paused.max(phase)
            };
            let Some(wait) = wait else { return };
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub fn view(&self) -> BreakerView {
        let inner = self.lock();
        let now = Instant::now();
        let open_for = match inner.phase {
            Phase::Open { until, .. } => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        let paused_for = inner.paused_until.map(|until| until.saturating_duration_since(now)).filter(|d| !d.is_zero());
        BreakerView {
            state: state_of(&inner.phase),
            consecutive_failures: inner.consecutive_failures,
            wait: open_for.max(paused_for),
            times_opened: inner.times_opened,
        }
    }
}

enum Admission {
    Go { probe: bool },
    WaitFor(Duration),
}

fn state_of(phase: &Phase) -> BreakerState {
    match phase {
        Phase::Closed => BreakerState::Closed,
        Phase::Open { .. } => BreakerState::Open,
        Phase::Probing { .. } => BreakerState::Probing,
        Phase::Ramping { .. } => BreakerState::Ramping,
    }
}

impl Permit<'_> {
    /// Reports how the call ended.
    pub fn finish(mut self, result: CallResult) {
        self.done = true;
        self.breaker.record(result, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings { failures: 3, open_ms: 1000, max_open_ms: 4000, ramp_ms: 10_000 })
    }

    fn go(breaker: &Breaker, now: Instant) -> bool {
        match breaker.try_admit(now) {
            Ok(Admission::Go { probe }) => {
                breaker.record(CallResult::Failed, probe);
                true
            }
            _ => false,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_an_answer_resets_the_count() {
        let b = breaker();
        b.record(CallResult::Failed, false);
        b.record(CallResult::Failed, false);
        b.record(CallResult::Answered, false);
        b.record(CallResult::Failed, false);
        b.record(CallResult::Failed, false);
        assert_eq!(b.view().state, BreakerState::Closed, "two in a row after an answer");
        b.record(CallResult::Failed, false);
        let view = b.view();
        assert_eq!(view.state, BreakerState::Open);
        assert_eq!(view.times_opened, 1);
        let refused = b.try_admit(Instant::now()).err().expect("no call while open");
        assert!(refused.retry_in <= Duration::from_secs(1) && refused.retry_in > Duration::from_millis(900));
    }

    #[test]
    fn one_probe_at_growing_intervals_then_a_ramp_then_closed() {
        let b = breaker();
        for _ in 0..3 {
            b.record(CallResult::Failed, false);
        }
        let start = Instant::now();
        // After the first wait: exactly one probe; it fails; the wait doubles.
        assert!(go(&b, start + Duration::from_millis(1001)));
        assert_eq!(b.view().state, BreakerState::Open);
        let Err(refused) = b.try_admit(Instant::now() + Duration::from_millis(1500)) else { panic!("still open") };
        assert!(refused.retry_in > Duration::from_millis(400), "the second wait is 2 s: {refused:?}");
        // The next probe, let through once the doubled wait is over; a second caller is not.
        let later = Instant::now() + Duration::from_millis(2001);
        let Ok(Admission::Go { probe: true }) = b.try_admit(later) else { panic!("a probe is due") };
        assert_eq!(b.view().state, BreakerState::Probing);
        assert!(b.try_admit(later).is_err(), "one probe at a time");
        b.record(CallResult::Answered, true);
        assert_eq!(b.view().state, BreakerState::Ramping);
        // Ramping: calls are spaced (2 a second at first).
        let now = Instant::now();
        assert!(matches!(b.try_admit(now), Ok(Admission::Go { probe: false })));
        match b.try_admit(now) {
            Ok(Admission::WaitFor(wait)) => assert!(wait > Duration::from_millis(400), "{wait:?}"),
            _ => panic!("the second call of the ramp waits for its slot"),
        }
        // After the ramp: closed.
        assert!(matches!(b.try_admit(now + Duration::from_secs(11)), Ok(Admission::Go { probe: false })));
        assert_eq!(b.view().state, BreakerState::Closed);
    }

    #[test]
    fn the_wait_stops_growing_at_max_open() {
        let b = breaker();
        for _ in 0..3 {
            b.record(CallResult::Failed, false);
        }
        let mut at = Instant::now();
        for _ in 0..5 {
            at += Duration::from_secs(5);
            assert!(go(&b, at));
        }
        let Err(refused) = b.try_admit(Instant::now()) else { panic!("open") };
        assert!(refused.retry_in <= Duration::from_secs(4), "capped at max_open: {refused:?}");
    }

    #[test]
    fn a_dropped_probe_lets_the_next_caller_probe() {
        let b = breaker();
        for _ in 0..3 {
            b.record(CallResult::Failed, false);
        }
        let later = Instant::now() + Duration::from_secs(2);
        let Ok(Admission::Go { probe: true }) = b.try_admit(later) else { panic!("a probe is due") };
        drop(Permit { breaker: &b, probe: true, done: false });
        assert!(matches!(b.try_admit(later), Ok(Admission::Go { probe: true })));
    }

    #[test]
    fn a_429_pauses_every_call_and_does_not_count_as_a_failure() {
        let b = breaker();
        b.record(CallResult::RateLimited { retry_after: Some(Duration::from_secs(3)) }, false);
        let view = b.view();
        assert_eq!((view.state, view.consecutive_failures), (BreakerState::Closed, 0));
        assert!(view.wait.is_some_and(|w| w > Duration::from_millis(2900)), "{view:?}");
        let b = breaker();
        b.record(CallResult::RateLimited { retry_after: Some(Duration::from_secs(3600)) }, false);
        assert!(b.view().wait.is_some_and(|w| w <= Duration::from_secs(4)), "capped at max_open");
        let b = breaker();
        b.record(CallResult::RateLimited { retry_after: Some(Duration::from_secs(3)) }, false);
        let Err(refused) = b.try_admit(Instant::now()) else { panic!("paused") };
        assert!(refused.reason.contains("429"));
        // A short pause is waited out inside admit instead.
        let b = breaker();
        b.record(CallResult::RateLimited { retry_after: Some(Duration::from_millis(200)) }, false);
        assert!(matches!(b.try_admit(Instant::now()), Ok(Admission::WaitFor(_))));
    }

    #[test]
    fn statuses_map_to_health() {
        assert_eq!(CallResult::of_status(200, None), CallResult::Answered);
        assert_eq!(CallResult::of_status(404, None), CallResult::Answered);
        assert_eq!(CallResult::of_status(401, None), CallResult::Answered);
        assert_eq!(CallResult::of_status(503, None), CallResult::Failed);
        assert_eq!(CallResult::of_status(408, None), CallResult::Failed);
        assert!(matches!(CallResult::of_status(429, None), CallResult::RateLimited { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_returns_when_the_probe_is_due() {
        let b = std::sync::Arc::new(breaker());
        for _ in 0..3 {
            b.record(CallResult::Failed, false);
        }
        let started = tokio::time::Instant::now();
        b.ready().await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(999) && waited < Duration::from_millis(1100), "{waited:?}");
    }
}
