//! Persists verified events and, for `access_code.*` events, their re-fetch
//! requests, in one transaction: what is acknowledged is never lost.
//!
//! Concurrent deliveries share a commit (group commit): requests queue for a few
//! writer tasks; each writer takes everything waiting (up to `max_batch`), stores it
//! in one transaction, and only after the commit answers each request. An idle
//! service writes each delivery at once, alone; a busy one pays one commit for many.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::seam::event::{ActionKind, CodeEndpoint, EventAction, EventRef, SeamEvent};
use crate::store::kept::KeptConnection;
use crate::store::queue::{self, EventRows, KnownCode, RefetchNotifier, RefetchRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// First time seen: stored (and queued when it asks for a re-fetch).
    New,
    /// Already stored under this delivery id or event id: nothing changed.
    Duplicate,
}

impl Stored {
    pub fn label(self) -> &'static str {
        match self {
            Stored::New => "accepted",
            Stored::Duplicate => "duplicate",
        }
    }
}

/// An event to store and the id of the delivery that brought it (None for events
/// that did not come by webhook).
pub struct Incoming<'a> {
    pub delivery_id: Option<&'a str>,
    pub event: &'a SeamEvent,
}

/// Stores one event. Commits before returning.
pub async fn store_event(pool: &PgPool, delivery_id: Option<&str>, event: &SeamEvent) -> sqlx::Result<Stored> {
    let stored = store_events(pool, &[Incoming { delivery_id, event }]).await?;
    Ok(stored[0])
}

/// Stores events in one transaction; returns, for each, whether it was new.
/// Within the batch, the first of several copies of one event is the new one.
/// The re-fetches it queues are NOTIFYed at its commit. (For the catch-up, whose
/// events mostly came by webhook already: no attempt at one statement.)
pub async fn store_events(pool: &PgPool, batch: &[Incoming<'_>]) -> sqlx::Result<Vec<Stored>> {
    let rows = event_rows(batch);
    let mut tx = crate::store::begin(pool).await?;
    let (stored, _) = store_sorting_out(&mut tx, batch, &rows, Announce::AtCommit).await?;
    tx.commit().await?;
    Ok(stored)
}

/// How the re-fetches a batch queues are announced to the workers.
#[derive(Clone, Copy, PartialEq)]
enum Announce {
    /// A NOTIFY in the transaction.
    AtCommit,
    /// None: the caller announces them after the commit (`RefetchNotifier`).
    ByCaller,
}

/// A writer's batch on the writer's own connection (`KeptConnection`): in one
/// statement when it can be, else in a transaction. Returns, for each delivery,
/// whether it was new, and whether the batch queued any re-fetch (announced by
/// the caller).
async fn store_batch(conn: &mut PgConnection, batch: &[Incoming<'_>]) -> sqlx::Result<(Vec<Stored>, bool)> {
    let rows = event_rows(batch);
    if let Some(stored) = store_all_new(conn, batch, &rows).await? {
        return Ok(stored);
    }
    let mut tx = sqlx::Connection::begin(conn).await?;
    let stored = store_sorting_out(&mut tx, batch, &rows, Announce::ByCaller).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Stores the batch inside the caller's transaction, sorting out which events are
/// new (stored before, or twice in the batch) and reading the mirrored codes that
/// device and account events ask for.
async fn store_sorting_out(
    tx: &mut PgConnection,
    batch: &[Incoming<'_>],
    rows: &EventRows<'_>,
    announce: Announce,
) -> sqlx::Result<(Vec<Stored>, bool)> {
    let inserted: Vec<String> = sqlx::query_file_scalar!(
        "src/store/sql/insert_events.sql",
        &rows.event_ids as _,
        &rows.delivery_ids as _,
        &rows.event_types as _,
        &rows.access_code_ids as _,
        &rows.device_ids as _,
        &rows.workspace_ids as _,
        &rows.occurred_at as _,
        &rows.actions as _,
        &rows.payloads as _,
        &rows.connected_account_ids as _,
    )
    .fetch_all(&mut *tx)
    .await?;

    let mut fresh: HashSet<String> = inserted.into_iter().collect();
    let stored: Vec<Stored> =
        batch.iter().map(|i| if fresh.remove(&i.event.event_id) { Stored::New } else { Stored::Duplicate }).collect();
    let new_events: Vec<&SeamEvent> =
        batch.iter().zip(&stored).filter(|(_, s)| **s == Stored::New).map(|(i, _)| i.event).collect();
    let affected = codes_affected(tx, &new_events).await?;
    let requests = merge_requests(&new_events, &affected);
    match announce {
        Announce::AtCommit => queue::enqueue_all(tx, &requests).await?,
        Announce::ByCaller => queue::enqueue_all_unannounced(tx, &requests).await?,
    }
    Ok((stored, !requests.is_empty()))
}

/// The batch's `seam_events` rows, in event_id order, so that concurrent batches
/// cannot deadlock. Borrowed, not copied: sqlx encodes the `&str`s into the arrays
/// directly.
fn event_rows<'a>(batch: &[Incoming<'a>]) -> EventRows<'a> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| &batch[i].event.event_id);
    let events = || order.iter().map(|&i| batch[i].event);
    EventRows {
        event_ids: events().map(|e| e.event_id.as_str()).collect(),
        delivery_ids: order.iter().map(|&i| batch[i].delivery_id).collect(),
        event_types: events().map(|e| e.event_type.as_str()).collect(),
        access_code_ids: events().map(|e| e.access_code_id.as_deref()).collect(),
        device_ids: events().map(|e| e.device_id.as_deref()).collect(),
        workspace_ids: events().map(|e| e.workspace_id.as_deref()).collect(),
        occurred_at: events().map(|e| e.occurred_at).collect(),
        actions: events().map(|e| e.action().kind()).collect(),
        payloads: events().map(|e| e.payload.as_str()).collect(),
        connected_account_ids: events().map(|e| e.connected_account_id.as_deref()).collect(),
    }
}

/// The common case in one round trip and one commit: a batch whose events are all
/// new, none of them twice, and none asking for the mirrored codes of a device or
/// account (which must be read first). None, having written nothing, when the batch
/// is not such a batch; then the caller stores it in a transaction. (A redelivery
/// shows in Postgres's log as the unique violation that sent it there.)
async fn store_all_new(
    conn: &mut PgConnection,
    batch: &[Incoming<'_>],
    rows: &EventRows<'_>,
) -> sqlx::Result<Option<(Vec<Stored>, bool)>> {
    let reads_the_mirror =
        rows.actions.iter().any(|a| matches!(a, ActionKind::RefetchDevice | ActionKind::RefetchConnectedAccount));
    if reads_the_mirror || twice(rows.event_ids.iter().copied()) || twice(rows.delivery_ids.iter().filter_map(|d| *d)) {
        return Ok(None);
    }
    let events: Vec<&SeamEvent> = batch.iter().map(|i| i.event).collect();
    let requests = merge_requests(&events, &[]);
    match queue::store_new_events_with_requests(conn, rows, &requests).await {
        Ok(()) => Ok(Some((vec![Stored::New; batch.len()], !requests.is_empty()))),
        // An event stored before, or by a concurrent batch meanwhile: the transaction
        // sorts it out. (Data Postgres refuses is refused there too: that error goes
        // straight to the writer, which stores the batch one delivery at a time.)
        Err(e) if crate::store::is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an id occurs more than once.
fn twice<'a>(ids: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = HashSet::new();
    !ids.into_iter().all(|id| seen.insert(id))
}

/// A mirrored code that a device or account event asks to fetch again.
struct Affected {
    code: KnownCode,
    /// The event that asks (an index into the batch's new events).
    event: usize,
}

/// The mirrored, not deleted codes of the devices and accounts that `events` name
/// (`device.*` and `connected_account.*` events the service acts on), read in the
/// intake transaction so that their re-fetches are queued with the event.
async fn codes_affected(conn: &mut sqlx::PgConnection, events: &[&SeamEvent]) -> sqlx::Result<Vec<Affected>> {
    let (mut devices, mut accounts) = (Vec::new(), Vec::new());
    for (i, event) in events.iter().enumerate() {
        match event.action() {
            EventAction::RefetchDevice { device_id } => devices.push((device_id, i as i32)),
            EventAction::RefetchConnectedAccount { connected_account_id } => {
                accounts.push((connected_account_id, i as i32))
            }
            EventAction::Refetch { .. } | EventAction::Ignore => {}
        }
    }
    if devices.is_empty() && accounts.is_empty() {
        return Ok(Vec::new());
    }
    let (device_ids, device_events): (Vec<String>, Vec<i32>) = devices.into_iter().unzip();
    let (account_ids, account_events): (Vec<String>, Vec<i32>) = accounts.into_iter().unzip();
    let rows = sqlx::query!(
        r#"
        SELECT a.access_code_id AS "access_code_id!", a.is_managed AS "is_managed!", a.device_id,
               a.workspace_id, a.connected_account_id, asked.event AS "event!"
        FROM (SELECT * FROM UNNEST($1::text[], $2::int[]) AS d(id, event)) asked
        JOIN access_codes a ON a.device_id = asked.id
        WHERE a.deleted_at IS NULL
        UNION ALL
        SELECT a.access_code_id, a.is_managed, a.device_id, a.workspace_id, a.connected_account_id,
               asked.event
        FROM (SELECT * FROM UNNEST($3::text[], $4::int[]) AS c(id, event)) asked
        JOIN access_codes a ON a.connected_account_id = asked.id
        WHERE a.deleted_at IS NULL
        "#,
        &device_ids,
        &device_events,
        &account_ids,
        &account_events,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Affected {
            code: KnownCode {
                access_code_id: row.access_code_id,
                is_managed: row.is_managed,
                device_id: row.device_id,
                workspace_id: row.workspace_id,
                connected_account_id: row.connected_account_id,
            },
            event: row.event as usize,
        })
        .collect())
}

/// One request per code: the count of the events that ask for it and the newest of
/// them. A code event asks for its code; a device or account event for each of the
/// `affected` codes, from the endpoint the mirror knows it by.
fn merge_requests<'a>(events: &[&'a SeamEvent], affected: &'a [Affected]) -> Vec<RefetchRequest<'a>> {
    let event_ref = |event: &SeamEvent| EventRef {
        event_id: Some(event.event_id.clone()),
        event_type: Some(event.event_type.clone()),
        occurred_at: event.occurred_at,
    };
    let asked_by_code = events.iter().flat_map(|event| {
        let EventAction::Refetch { endpoint, .. } = event.action() else { return vec![] };
        let Some(access_code_id) = event.access_code_id.as_deref() else { return vec![] };
        // `backup_access_code_pulled` also asks for the backup code it names.
        let codes = std::iter::once((access_code_id, endpoint))
            .chain(event.backup_access_code_id().map(|backup| (backup, CodeEndpoint::Managed)));
        codes
            .map(|(access_code_id, endpoint)| RefetchRequest {
                access_code_id,
                endpoint,
                device_id: event.device_id.as_deref(),
                workspace_id: event.workspace_id.as_deref(),
                connected_account_id: event.connected_account_id.as_deref(),
                event: Some(event_ref(event)),
                requests: 1,
            })
            .collect()
    });
    let asked_by_device = affected.iter().map(|asked| asked.code.refetch(Some(event_ref(events[asked.event]))));
    let mut by_code: HashMap<&str, RefetchRequest<'a>> = HashMap::new();
    for request in asked_by_code.chain(asked_by_device) {
        match by_code.get_mut(request.access_code_id) {
            None => {
                by_code.insert(request.access_code_id, request);
            }
            Some(merged) => {
                merged.requests += 1;
                merged.device_id = request.device_id.or(merged.device_id);
                merged.workspace_id = request.workspace_id.or(merged.workspace_id);
                merged.connected_account_id = request.connected_account_id.or(merged.connected_account_id);
                let newer = match (&request.event, &merged.event) {
                    (Some(this), Some(kept)) => this.supersedes(kept),
                    (this, _) => this.is_some(),
                };
                if newer {
                    merged.endpoint = request.endpoint;
                    merged.event = request.event;
                }
            }
        }
    }
    by_code.into_values().collect()
}

/// Why a delivery could not be stored; the database's error, shared by a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(Arc<str>);

struct Job {
    delivery_id: String,
    event: SeamEvent,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
}

/// The group-commit front of `store_events`, shared by every request handler.
#[derive(Clone)]
pub struct IntakeWriter {
    jobs: mpsc::Sender<Job>,
}

/// The writer side: the queue of deliveries waiting, from which any number of
/// writer loops (`run_one`) take batches. The caller runs the loops (the
/// application's supervisor restarts one that panics).
#[derive(Clone)]
pub struct IntakeWriters {
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    notifier: RefetchNotifier,
}

impl IntakeWriter {
    /// The front for request handlers and the writer side, for up to `writers`
    /// loops each committing up to `max_batch` deliveries at once. The loops end
    /// when the last `IntakeWriter` clone is dropped.
    /// The work they queue is announced by `notifier` after each commit.
    pub fn new(
        pool: PgPool,
        writers: usize,
        max_batch: usize,
        notifier: RefetchNotifier,
    ) -> (IntakeWriter, IntakeWriters) {
        let (jobs, receiver) = mpsc::channel::<Job>(max_batch.max(1) * writers.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        (IntakeWriter { jobs }, IntakeWriters { pool, receiver, max_batch: max_batch.max(1), notifier })
    }

    /// Stores one delivery; returns after its transaction committed.
    pub async fn store(&self, delivery_id: &str, event: SeamEvent) -> Result<Stored, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { delivery_id: delivery_id.to_owned(), event, reply };
        let stopped = || StoreError("the intake writer stopped".into());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl IntakeWriters {
    /// One writer loop: takes what is waiting, commits it, answers; until every
    /// `IntakeWriter` is dropped. A delivery whose batch panicked is answered
    /// "stopped" (503: the sender retries) as its reply is dropped.
    pub async fn run_one(self) {
        write_batches(self.pool, self.receiver, self.max_batch, &self.notifier).await;
    }

    /// The task sending the writers' NOTIFYs, until `stop` fires.
    pub async fn run_notifier(self, stop: CancellationToken) {
        self.notifier.run(self.pool, stop).await;
    }
}

async fn write_batches(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    notifier: &RefetchNotifier,
) {
    let mut conn = KeptConnection::new(pool);
    loop {
        let mut jobs = Vec::with_capacity(max_batch);
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut jobs, max_batch).await == 0 {
                return;
            }
        }
        let batch: Vec<Incoming> =
            jobs.iter().map(|job| Incoming { delivery_id: Some(&job.delivery_id), event: &job.event }).collect();
        let result = match store_on(&mut conn, &batch).await {
            // One delivery's bad data must not fail the others that shared its
            // transaction: store them one by one, so only it is refused.
            Err(e) if batch.len() > 1 && crate::store::is_data_error(&e) => {
                let mut each = Vec::with_capacity(batch.len());
                let mut queued = false;
                for incoming in &batch {
                    let alone = store_on(&mut conn, std::slice::from_ref(incoming)).await;
                    queued |= alone.as_ref().is_ok_and(|(_, q)| *q);
                    each.push(alone.map(|(stored, _)| stored[0]));
                }
                if queued {
                    notifier.signal();
                }
                for (job, stored) in jobs.into_iter().zip(each) {
                    let _ = job.reply.send(stored.map_err(|e| StoreError(e.to_string().into())));
                }
                continue;
            }
            result => result,
        };
        match result {
            Ok((stored, queued)) => {
                if queued {
                    notifier.signal();
                }
                for (job, stored) in jobs.into_iter().zip(stored) {
                    let _ = job.reply.send(Ok(stored));
                }
            }
            Err(e) => {
                let error = StoreError(e.to_string().into());
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// `store_batch` on the writer's own connection.
async fn store_on(kept: &mut KeptConnection, batch: &[Incoming<'_>]) -> sqlx::Result<(Vec<Stored>, bool)> {
    kept.run(|mut conn| async move {
        let result = store_batch(&mut conn, batch).await;
        (conn, result)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, code: &str, occurred_at: Option<&str>, event_type: &str) -> SeamEvent {
        let mut body = serde_json::json!({"event_id": id, "event_type": event_type, "access_code_id": code});
        if let Some(at) = occurred_at {
            body["occurred_at"] = at.into();
        }
        SeamEvent::parse(body.to_string().as_bytes(), false).unwrap()
    }

    #[test]
    fn requests_merge_per_code_keeping_the_newest_event() {
        let events = [
            event("e1", "a", Some("2026-11-25T10:00:02Z"), "access_code.set_on_device"),
            event("e2", "a", Some("2026-11-25T10:00:01Z"), "access_code.created"),
            event("e3", "b", None, "access_code.unmanaged.created"),
            event("e4", "a", Some("2026-11-25T10:00:03Z"), "access_code.unmanaged.converted_to_managed"),
            event("e5", "x", None, "lock.locked"),
        ];
        let events: Vec<&SeamEvent> = events.iter().collect();
        let mut merged = merge_requests(&events, &[]);
        merged.sort_by_key(|r| r.access_code_id);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].access_code_id, merged[0].requests), ("a", 3));
        assert_eq!(merged[0].event.as_ref().unwrap().event_id.as_deref(), Some("e4"));
        assert_eq!((merged[1].access_code_id, merged[1].requests), ("b", 1));
        assert_eq!(merged[1].endpoint, crate::seam::event::CodeEndpoint::Unmanaged);
    }

    #[test]
    fn a_pulled_backup_is_fetched_with_its_original() {
        let body = serde_json::json!({
            "event_id": "e1", "event_type": "access_code.backup_access_code_pulled", "access_code_id": "a",
            "occurred_at": "2026-11-25T10:00:02Z", "backup_access_code_id": "b"
        });
        let pulled = SeamEvent::parse(body.to_string().as_bytes(), false).unwrap();
        let other = event("e2", "c", None, "access_code.backup_access_code_pulled");
        let events = [&pulled, &other];
        let mut merged = merge_requests(&events, &[]);
        merged.sort_by_key(|r| r.access_code_id);
        let ids: Vec<&str> = merged.iter().map(|r| r.access_code_id).collect();
        assert_eq!(
            ids,
            ["a", "b", "c"],
            "the backup b too; an event without backup_access_code_id asks for its code only"
        );
        assert_eq!(merged[1].endpoint, CodeEndpoint::Managed);
        assert_eq!(merged[1].event.as_ref().unwrap().event_id.as_deref(), Some("e1"));
    }

    fn incoming<'a>(delivery_id: &'a str, event: &'a SeamEvent) -> Incoming<'a> {
        Incoming { delivery_id: Some(delivery_id), event }
    }

    async fn queued(pool: &PgPool) -> Vec<(String, i64, Option<String>)> {
        sqlx::query_as(
            "SELECT access_code_id, requests, last_event_id FROM access_code_refetches ORDER BY access_code_id",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[sqlx::test]
    async fn a_batch_with_a_redelivery_in_it_is_sorted_out_in_a_transaction(pool: PgPool) {
        let e1 = event("e1", "ac_1", Some("2026-11-25T10:00:01Z"), "access_code.created");
        let e2 = event("e2", "ac_2", Some("2026-11-25T10:00:02Z"), "access_code.created");
        let e3 = event("e3", "ac_1", Some("2026-11-25T10:00:03Z"), "access_code.set_on_device");
        let mut conn = pool.acquire().await.unwrap();

        // All new: the one-statement way.
        let (stored, queued_any) = store_batch(&mut conn, &[incoming("d1", &e1), incoming("d2", &e2)]).await.unwrap();
        assert_eq!((stored, queued_any), (vec![Stored::New, Stored::New], true));
        // e1 again, under its delivery id, beside a new event for the same code.
        let (stored, _) = store_batch(&mut conn, &[incoming("d1", &e1), incoming("d3", &e3)]).await.unwrap();
        assert_eq!(stored, vec![Stored::Duplicate, Stored::New]);
        // The same event under another delivery id is a duplicate too.
        let (stored, queued_any) = store_batch(&mut conn, &[incoming("d9", &e2)]).await.unwrap();
        assert_eq!((stored, queued_any), (vec![Stored::Duplicate], false));

        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM seam_events").fetch_one(&pool).await.unwrap();
        assert_eq!(events, 3);
        assert_eq!(
            queued(&pool).await,
            [("ac_1".into(), 2, Some("e3".into())), ("ac_2".into(), 1, Some("e2".into()))],
            "the redelivered e1 counted once; e3, the newest, is the one named"
        );
    }

    #[sqlx::test]
    async fn a_copy_stored_by_a_concurrent_transaction_sends_the_batch_the_long_way(pool: PgPool) {
        let e5 = event("e5", "ac_5", Some("2026-11-25T10:00:05Z"), "access_code.created");
        let e6 = event("e6", "ac_6", Some("2026-11-25T10:00:06Z"), "access_code.created");
        // Another writer has stored e5 but not committed yet.
        let mut other = pool.begin().await.unwrap();
        store_sorting_out(&mut other, &[incoming("d5", &e5)], &event_rows(&[incoming("d5", &e5)]), Announce::ByCaller)
            .await
            .unwrap();

        let racing = {
            let pool = pool.clone();
            let (e5, e6) = (e5.clone(), e6.clone());
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                store_batch(&mut conn, &[incoming("d5", &e5), incoming("d6", &e6)]).await
            })
        };
        // The one statement waits on e5's key until the other transaction ends.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!racing.is_finished(), "the batch waits for the other transaction");
        other.commit().await.unwrap();

        let (stored, _) = racing.await.unwrap().unwrap();
        assert_eq!(stored, vec![Stored::Duplicate, Stored::New]);
        assert_eq!(
            queued(&pool).await,
            [("ac_5".into(), 1, Some("e5".into())), ("ac_6".into(), 1, Some("e6".into()))],
            "e5 queued once, by the transaction that stored it; e6 by the batch"
        );
    }
}
