//! The re-fetch queue in Postgres (`access_code_refetches`): one row per code,
//! claimed under a lease, so any number of workers in any number of processes
//! fetch each code at most once at a time and nothing is lost when one dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::seam::event::{ActionKind, CodeEndpoint, EventRef};
use crate::seam::workspaces::ClaimFilter;

/// The channel an enqueue notifies, so idle workers wake at once.
pub const REFETCH_CHANNEL: &str = "seam_access_sync_refetch";

/// A request to fetch one code again, and the (newest) event that asked for it.
#[derive(Debug, Clone)]
pub struct RefetchRequest<'a> {
    pub access_code_id: &'a str,
    pub endpoint: CodeEndpoint,
    pub device_id: Option<&'a str>,
    pub workspace_id: Option<&'a str>,
    pub connected_account_id: Option<&'a str>,
    pub event: Option<EventRef>,
    /// How many events this request stands for (several in one intake batch).
    pub requests: i64,
}

/// A mirrored code to fetch again, as the mirror (or the device list) knows it.
#[derive(Debug, Clone)]
pub struct KnownCode {
    pub access_code_id: String,
    pub is_managed: bool,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub connected_account_id: Option<String>,
}

impl KnownCode {
    /// A request to fetch this code from the endpoint that serves it, asked for by
    /// `event` (none: a sweep, the import).
    pub fn refetch(&self, event: Option<EventRef>) -> RefetchRequest<'_> {
        RefetchRequest {
            access_code_id: &self.access_code_id,
            endpoint: CodeEndpoint::of(self.is_managed),
            device_id: self.device_id.as_deref(),
            workspace_id: self.workspace_id.as_deref(),
            connected_account_id: self.connected_account_id.as_deref(),
            event,
            requests: 1,
        }
    }
}

/// Upserts a batch of re-fetch requests (arrays, one element per code), storing
/// the events that asked for them in the same statement when given, and notifies
/// the workers. Public so the benchmark's pgbench baseline runs it too.
pub const ENQUEUE_SQL: &str = include_str!("sql/enqueue.sql");

/// Adds a request to the code's pending re-fetch, creating it if there is none.
pub async fn enqueue(conn: &mut PgConnection, request: &RefetchRequest<'_>) -> sqlx::Result<()> {
    enqueue_all(conn, std::slice::from_ref(request)).await
}

/// Adds requests to their codes' pending re-fetches in one statement, inside the
/// caller's transaction; the NOTIFY is delivered at its commit. At most one request
/// per code (merge them first).
pub async fn enqueue_all(conn: &mut PgConnection, requests: &[RefetchRequest<'_>]) -> sqlx::Result<()> {
    upsert_requests(conn, &EventRows::default(), requests, Some(REFETCH_CHANNEL)).await
}

/// As `enqueue_all`, without the NOTIFY: for the intake, whose commits would
/// otherwise queue behind each other (Postgres serialises the commits of notifying
/// transactions, fsync included); it announces the work after the commit instead
/// (`RefetchNotifier`).
pub async fn enqueue_all_unannounced(conn: &mut PgConnection, requests: &[RefetchRequest<'_>]) -> sqlx::Result<()> {
    upsert_requests(conn, &EventRows::default(), requests, None).await
}

/// Events to store in the statement that queues the re-fetches they ask for: the
/// columns of `seam_events`, one element per event, in event_id order (built by
/// `store::intake`).
#[derive(Debug, Default)]
pub struct EventRows<'a> {
    pub event_ids: Vec<&'a str>,
    pub delivery_ids: Vec<Option<&'a str>>,
    pub event_types: Vec<&'a str>,
    pub access_code_ids: Vec<Option<&'a str>>,
    pub device_ids: Vec<Option<&'a str>>,
    pub workspace_ids: Vec<Option<&'a str>>,
    pub occurred_at: Vec<Option<DateTime<Utc>>>,
    pub actions: Vec<ActionKind>,
    pub payloads: Vec<&'a str>,
    pub connected_account_ids: Vec<Option<&'a str>>,
}

/// Stores `events`, every one of them new, and queues `requests` (merged per code)
/// in one statement: one round trip, and one commit when `conn` is not inside a
/// transaction. An event (or delivery) stored before fails it with a unique
/// violation (`store::is_unique_violation`), having written nothing. No NOTIFY:
/// the intake announces its work after the commit (`RefetchNotifier`).
pub async fn store_new_events_with_requests(
    conn: &mut PgConnection,
    events: &EventRows<'_>,
    requests: &[RefetchRequest<'_>],
) -> sqlx::Result<()> {
    upsert_requests(conn, events, requests, None).await
}

/// The one statement behind the enqueues (`sql/enqueue.sql`).
async fn upsert_requests(
    conn: &mut PgConnection,
    events: &EventRows<'_>,
    requests: &[RefetchRequest<'_>],
    channel: Option<&str>,
) -> sqlx::Result<()> {
    if requests.is_empty() && events.event_ids.is_empty() {
        return Ok(());
    }
    // Rows are locked in id order, so concurrent batches cannot deadlock.
    let mut requests: Vec<&RefetchRequest> = requests.iter().collect();
    requests.sort_by_key(|r| r.access_code_id);
    let column = |f: &dyn Fn(&RefetchRequest) -> Option<String>| requests.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids = column(&|r| Some(r.access_code_id.to_owned()));
    let endpoints: Vec<CodeEndpoint> = requests.iter().map(|r| r.endpoint).collect();
    let devices = column(&|r| r.device_id.map(str::to_owned));
    let workspaces = column(&|r| r.workspace_id.map(str::to_owned));
    let accounts = column(&|r| r.connected_account_id.map(str::to_owned));
    let event_ids = column(&|r| r.event.as_ref().and_then(|e| e.event_id.clone()));
    let event_types = column(&|r| r.event.as_ref().and_then(|e| e.event_type.clone()));
    let counts: Vec<i64> = requests.iter().map(|r| r.requests).collect();
    let occurred: Vec<Option<DateTime<Utc>>> =
        requests.iter().map(|r| r.event.as_ref().and_then(|e| e.occurred_at)).collect();
    sqlx::query_file!(
        "src/store/sql/enqueue.sql",
        ids as _,
        endpoints as _,
        devices as _,
        workspaces as _,
        &counts,
        event_ids as _,
        event_types as _,
        occurred as _,
        channel,
        accounts as _,
        &events.event_ids as _,
        &events.delivery_ids as _,
        &events.event_types as _,
        &events.access_code_ids as _,
        &events.device_ids as _,
        &events.workspace_ids as _,
        &events.occurred_at as _,
        &events.actions as _,
        &events.payloads as _,
        &events.connected_account_ids as _,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Announces work the intake queued, after its commit: at once to a worker in this
/// process, and by one `NOTIFY` on the refetch channel to workers elsewhere, sent
/// by its own task at most once per `MIN_NOTIFY_GAP` however many batches commit.
/// A NOTIFY lost (the database down) is covered by the workers' polling.
#[derive(Clone)]
pub struct RefetchNotifier(Arc<NotifierState>);

struct NotifierState {
    /// The in-process worker's wake-up, when this process runs one.
    local: Option<Arc<Notify>>,
    /// Work queued since the last NOTIFY.
    pending: AtomicBool,
    announce: Notify,
}

/// Batches committing closer together than this share one NOTIFY.
const MIN_NOTIFY_GAP: Duration = Duration::from_millis(5);

impl RefetchNotifier {
    pub fn new(local: Option<Arc<Notify>>) -> RefetchNotifier {
        RefetchNotifier(Arc::new(NotifierState { local, pending: AtomicBool::new(false), announce: Notify::new() }))
    }

    /// New work was committed.
    pub fn signal(&self) {
        if let Some(local) = &self.0.local {
            local.notify_one();
        }
        if !self.0.pending.swap(true, Ordering::AcqRel) {
            self.0.announce.notify_one();
        }
    }

    /// Sends the NOTIFYs until `stop` fires.
    pub async fn run(self, pool: PgPool, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.0.announce.notified() => {}
                _ = stop.cancelled() => return,
            }
            self.0.pending.store(false, Ordering::Release);
            if let Err(e) = sqlx::query!("SELECT pg_notify($1, '')", REFETCH_CHANNEL).execute(&pool).await {
                tracing::warn!(error = %e, "cannot NOTIFY new work; the workers' polling finds it");
            }
            tokio::time::sleep(MIN_NOTIFY_GAP).await;
        }
    }
}

/// A re-fetch this worker holds until `claimed_until`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub access_code_id: String,
    pub endpoint: CodeEndpoint,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub connected_account_id: Option<String>,
    /// The requests this fetch serves; more may arrive while it runs.
    pub requests: i64,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub claim_token: Uuid,
    /// The database's clock when the claim was taken: the fetch that follows sees
    /// Seam's state at this time or later.
    pub claimed_at: DateTime<Utc>,
    pub first_requested_at: DateTime<Utc>,
    pub last_event_id: Option<String>,
    pub last_event_type: Option<String>,
    pub last_event_occurred_at: Option<DateTime<Utc>>,
}

impl Claim {
    /// The newest event among the requests this claim serves.
    pub fn event(&self) -> EventRef {
        EventRef {
            event_id: self.last_event_id.clone(),
            event_type: self.last_event_type.clone(),
            occurred_at: self.last_event_occurred_at,
        }
    }
}

/// Claims the re-fetch that has been due longest, if any, for `lease`. An expired
/// lease (a worker that died mid-fetch) is claimable again.
///
/// Exactly one row: the locking subquery is a scalar one (an InitPlan, run once).
/// Joined as `UPDATE … FROM (… LIMIT 1 FOR UPDATE SKIP LOCKED)`, the planner may put
/// it on the inner side of a nested loop (when statistics say the queue is nearly
/// empty) and run it again for every row of the outer scan; with other workers
/// holding locks, each run skips to another row, and one statement claimed up to 15
/// rows, of which the worker served the first: the rest sat claimed, unserved, until
/// their lease expired (found by the fault suite, tests/faults).
///
/// Only codes `filter` admits: those of a workspace this process has a credential
/// for; the others wait (`seam::workspaces`).
pub async fn claim_next(
    db: impl sqlx::PgExecutor<'_>,
    lease: Duration,
    filter: &ClaimFilter,
) -> sqlx::Result<Option<Claim>> {
    sqlx::query_as!(
        Claim,
        r#"
        UPDATE access_code_refetches r SET
            claim_token = gen_random_uuid(),
            claimed_until = now() + make_interval(secs => $1),
            attempts = r.attempts + 1,
            updated_at = now()
        WHERE r.access_code_id = (
            SELECT access_code_id FROM access_code_refetches
            WHERE dead_lettered_at IS NULL
              AND next_attempt_at <= now()
              AND (claimed_until IS NULL OR claimed_until < now())
              AND ($2 OR workspace_id = ANY($3) OR ($4 AND workspace_id IS NULL))
            ORDER BY next_attempt_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING r.access_code_id, r.endpoint AS "endpoint: CodeEndpoint", r.device_id, r.workspace_id,
                  r.connected_account_id, r.requests, r.attempts, r.claim_token AS "claim_token!", now() AS "claimed_at!", r.first_requested_at,
                  r.last_event_id, r.last_event_type, r.last_event_occurred_at
        "#,
        lease.as_secs_f64(),
        filter.any,
        &filter.workspace_ids,
        filter.without_workspace,
    )
    .fetch_optional(db)
    .await
}

/// Re-fetches no configured credential can serve (`filter` does not admit them),
/// per workspace named: they wait until that workspace is added.
pub async fn unroutable(pool: &PgPool, filter: &ClaimFilter) -> sqlx::Result<Vec<(Option<String>, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT workspace_id, count(*) AS "count!" FROM access_code_refetches
           WHERE dead_lettered_at IS NULL
             AND NOT ($1 OR workspace_id = ANY($2) OR ($3 AND workspace_id IS NULL))
           GROUP BY workspace_id ORDER BY workspace_id"#,
        filter.any,
        &filter.workspace_ids,
        filter.without_workspace,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.workspace_id, row.count)).collect())
}

/// Whether the claim is still ours; locks the queue row until the transaction ends.
pub async fn lock_claim(conn: &mut PgConnection, claim: &Claim) -> sqlx::Result<bool> {
    let row: Option<i64> = sqlx::query_scalar!(
        "SELECT requests FROM access_code_refetches
         WHERE access_code_id = $1 AND claim_token = $2 FOR UPDATE",
        claim.access_code_id,
        claim.claim_token,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// What became of a completed fetch's queue row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// No request arrived during the fetch: the row is gone.
    Done,
    /// Requests arrived during the fetch: the row is due again after the delay
    /// `complete` was given (`worker.requested_again_delay_ms`).
    RequestedAgain,
}

/// Ends a successful fetch inside the caller's transaction (after `lock_claim`).
/// A row asked for again during the fetch is due again after `again_after`: the
/// rest of a burst of events lands meanwhile and is served by one more fetch. It
/// is NOTIFYed only when due at once (the worker that fetched wakes itself later).
pub async fn complete(conn: &mut PgConnection, claim: &Claim, again_after: Duration) -> sqlx::Result<Completion> {
    // One statement: the row is locked (`lock_claim`), so `requests` cannot move
    // between the two halves, and exactly one of them applies.
    let row = sqlx::query!(
        r#"
        WITH done AS (
            DELETE FROM access_code_refetches WHERE access_code_id = $1 AND requests = $2
            RETURNING 1
        ), rearmed AS (
            UPDATE access_code_refetches SET
                claim_token = NULL, claimed_until = NULL, attempts = 0, last_error = NULL,
                next_attempt_at = now() + make_interval(secs => $3),
                first_requested_at = updated_at, updated_at = now()
            WHERE access_code_id = $1 AND requests <> $2
            RETURNING 1
        )
        -- A row due again at once is NOTIFYed (the worker that fetched wakes itself
        -- after a delay).
        SELECT EXISTS (SELECT 1 FROM done) AS "done!",
               (SELECT count(*) FROM (SELECT pg_notify($4, '') FROM rearmed WHERE $3 = 0) n) AS "notified!"
        "#,
        claim.access_code_id,
        claim.requests,
        again_after.as_secs_f64(),
        REFETCH_CHANNEL,
    )
    .fetch_one(conn)
    .await?;
    Ok(if row.done { Completion::Done } else { Completion::RequestedAgain })
}

/// What to do with a fetch that did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Try again after `delay`; `counts` is false for failures that are not the
    /// code's fault (a rejected API key), which never dead-letter it.
    Retry { delay: Duration, counts: bool },
    /// Give up: an operator must look and redrive.
    DeadLetter,
}

/// Records a failed attempt: back off, or dead-letter. Returns false if the claim
/// had already been lost to another worker.
pub async fn fail(db: impl sqlx::PgExecutor<'_>, claim: &Claim, failure: &Failure, error: &str) -> sqlx::Result<bool> {
    let (delay_seconds, uncount, dead) = match failure {
        Failure::Retry { delay, counts } => (delay.as_secs_f64(), i32::from(!counts), false),
        Failure::DeadLetter => (0.0, 0, true),
    };
    let updated = sqlx::query!(
        r#"
        UPDATE access_code_refetches SET
            claim_token = NULL, claimed_until = NULL,
            attempts = attempts - $3,
            next_attempt_at = now() + make_interval(secs => $4),
            dead_lettered_at = CASE WHEN $5 THEN now() END,
            last_error = $6,
            updated_at = now()
        WHERE access_code_id = $1 AND claim_token = $2
        "#,
        claim.access_code_id,
        claim.claim_token,
        uncount,
        delay_seconds,
        dead,
        error,
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(updated == 1)
}
