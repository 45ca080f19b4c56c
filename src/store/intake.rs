//! Persists verified events and, for `access_code.*` events, their re-fetch
//! requests, in one transaction: what is acknowledged is never lost.
//!
//! Concurrent deliveries share a commit (group commit): requests queue for a few
//! writer tasks; each writer takes everything waiting (up to `max_batch`), stores it
//! in one transaction, and only after the commit answers each request. An idle
//! service writes each delivery at once, alone; a busy one pays one commit for many.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::seam::event::{EventAction, SeamEvent};
use crate::store::queue::{self, RefetchNotifier};

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

/// The intake's one statement per batch (`store_batch`). Public so the benchmark's
/// pgbench baseline runs it too.
pub const INTAKE_BATCH_SQL: &str = include_str!("sql/intake_batch.sql");

/// Stores one event. Commits before returning.
pub async fn store_event(pool: &PgPool, delivery_id: Option<&str>, event: &SeamEvent) -> sqlx::Result<Stored> {
    let stored = store_events(pool, &[Incoming { delivery_id, event }]).await?;
    Ok(stored[0])
}

/// Stores events in one transaction; returns, for each, whether it was new.
/// Within the batch, the first of several copies of one event is the new one.
/// The re-fetches it queues are NOTIFYed at its commit.
pub async fn store_events(pool: &PgPool, batch: &[Incoming<'_>]) -> sqlx::Result<Vec<Stored>> {
    Ok(store_batch(pool, batch, Announce::AtCommit).await?.0)
}

/// How the re-fetches a batch queues are announced to the workers.
#[derive(Clone, Copy, PartialEq)]
enum Announce {
    /// A NOTIFY in the transaction.
    AtCommit,
    /// None: the caller announces them after the commit (`RefetchNotifier`).
    ByCaller,
}

/// `store_events`; also says whether it queued any re-fetch. One statement
/// (`sql/intake_batch.sql`): the events, and the re-fetches the new ones ask for,
/// merged per code.
async fn store_batch(pool: &PgPool, batch: &[Incoming<'_>], announce: Announce) -> sqlx::Result<(Vec<Stored>, bool)> {
    // Rows go in in event_id order, so concurrent batches cannot deadlock.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| &batch[i].event.event_id);
    let events: Vec<&SeamEvent> = order.iter().map(|&i| batch[i].event).collect();
    let actions: Vec<EventAction> = events.iter().map(|e| e.action()).collect();
    // Borrowed, not copied: sqlx encodes `&str`s into the arrays directly.
    let text = |f: &dyn Fn(&SeamEvent) -> Option<&str>| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    let asked = |f: &dyn Fn(&EventAction) -> Option<&str>| actions.iter().map(f).collect::<Vec<_>>();
    let payloads: Vec<String> = events.iter().map(|e| e.payload.to_string()).collect();
    let channel = match announce {
        Announce::AtCommit => Some(queue::REFETCH_CHANNEL),
        Announce::ByCaller => None,
    };
    let row = sqlx::query_file!(
        "src/store/sql/intake_batch.sql",
        text(&|e| Some(e.event_id.as_str())) as _,
        order.iter().map(|&i| batch[i].delivery_id).collect::<Vec<_>>() as _,
        text(&|e| Some(e.event_type.as_str())) as _,
        text(&|e| e.access_code_id.as_deref()) as _,
        text(&|e| e.device_id.as_deref()) as _,
        text(&|e| e.workspace_id.as_deref()) as _,
        events.iter().map(|e| e.occurred_at).collect::<Vec<_>>() as _,
        actions.iter().map(EventAction::kind).collect::<Vec<_>>() as _,
        &payloads as _,
        text(&|e| e.connected_account_id.as_deref()) as _,
        order.iter().map(|&i| i as i32).collect::<Vec<_>>() as _,
        asked(&|a| match a {
            EventAction::Refetch { endpoint, .. } => Some(endpoint.as_str()),
            _ => None,
        }) as _,
        text(&|e| e.backup_access_code_id()) as _,
        asked(&|a| match a {
            EventAction::RefetchDevice { device_id } => Some(device_id.as_str()),
            _ => None,
        }) as _,
        asked(&|a| match a {
            EventAction::RefetchConnectedAccount { connected_account_id } => Some(connected_account_id.as_str()),
            _ => None,
        }) as _,
        channel,
    )
    .fetch_one(pool)
    .await?;

    let mut fresh: HashSet<String> = row.inserted.into_iter().collect();
    let stored: Vec<Stored> =
        batch.iter().map(|i| if fresh.remove(&i.event.event_id) { Stored::New } else { Stored::Duplicate }).collect();
    Ok((stored, row.queued > 0))
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
        let result = match store_batch(&pool, &batch, Announce::ByCaller).await {
            // One delivery's bad data must not fail the others that shared its
            // transaction: store them one by one, so only it is refused.
            Err(e) if batch.len() > 1 && crate::store::is_data_error(&e) => {
                let mut each = Vec::with_capacity(batch.len());
                let mut queued = false;
                for incoming in &batch {
                    let alone = store_batch(&pool, std::slice::from_ref(incoming), Announce::ByCaller).await;
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
