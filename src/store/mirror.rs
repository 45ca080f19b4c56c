//! The mirror (`access_codes` + `access_code_history`): applies what a fetch saw.
//!
//! `apply` runs three steps inside the caller's transaction: `classify` decides
//! what changed (pure, no database), `upsert_found` / `mark_deleted` write the row,
//! and `record_change` adds the history row and the NOTIFY.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::seam::client::FetchedCode;
use crate::seam::event::{CodeEndpoint, EventRef, parse_time, redact_pin};
use crate::store::queue::{self, RefetchRequest};

/// Notified, in the same transaction, whenever a code is created, deleted, or its
/// status, warnings, errors, name, time frame or PIN change: `LISTEN access_code_changed`.
pub const CHANGE_CHANNEL: &str = "access_code_changed";

/// Seam's event for a new PIN: with `store_pins = false`, the only sign of one.
const PIN_CHANGED_EVENT: &str = "access_code.code_changed";

/// One fetch of a code, as the mirror needs to know it.
#[derive(Debug, Clone)]
pub struct Fetch<'a> {
    pub access_code_id: &'a str,
    /// The endpoint that answered.
    pub endpoint: CodeEndpoint,
    /// From the events, for a code Seam no longer returns.
    pub device_id: Option<&'a str>,
    pub workspace_id: Option<&'a str>,
    /// From the events or the device list: Seam's access code does not carry it.
    pub connected_account_id: Option<&'a str>,
    /// A fetch of one code, or the import's listing of a device's codes.
    pub origin: Origin,
    /// The newest event behind the fetch; empty for sweeps and manual re-fetches.
    pub trigger: EventRef,
    /// The database's clock when the fetch was claimed: Seam's answer is at least
    /// this fresh, and a row fetched later is never overwritten by it.
    pub started_at: DateTime<Utc>,
}

/// What Seam said about a code.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    Found(&'a FetchedCode),
    /// 404: the code no longer exists.
    Gone,
}

crate::text_enum::text_enum! {
    /// Where an observation of a code came from (`access_code_history.origin`).
    pub enum Origin {
        /// `/access_codes/get` (or the unmanaged one) for one code.
        Fetch = "fetch",
        /// A device's code list, read by the import.
        Import = "import",
    }
}

crate::text_enum::text_enum! {
    /// What changed on a code that was alive before and after
    /// (`access_code_history.changes`), in the words of Seam's event types. A PIN
    /// change is named, never its value.
    pub enum FieldChange {
        Status = "status_changed",
        Warnings = "warnings_changed",
        Errors = "errors_changed",
        Name = "name_changed",
        TimeFrame = "time_frame_changed",
        Code = "code_changed",
        /// `pulled_backup_access_code_id` became set: a backup code was pulled for it.
        BackupPulled = "backup_pulled",
    }
}

crate::text_enum::text_enum! {
    /// How a fetch changed the mirror (`access_code_history.change`).
    pub enum ChangeKind {
        Created = "created",
        Changed = "changed",
        Deleted = "deleted",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A newer fetch is already stored; this one was dropped.
    Stale,
    /// Stored; `change` is `None` when nothing a history row records changed.
    Stored { change: Option<ChangeKind>, previous_status: Option<String>, status: Option<String> },
}

/// The part of a mirror row that a change is judged on.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: Option<String>,
    pub warnings: Value,
    pub errors: Value,
    pub name: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// The PIN, compared only when the service stores PINs (`store_pins`).
    pub code: Option<String>,
    /// The backup code Seam pulled for this one.
    pub pulled_backup_access_code_id: Option<String>,
    pub deleted: bool,
}

impl Default for Snapshot {
    /// A code never seen alive: no status, no warnings, no errors.
    fn default() -> Snapshot {
        Snapshot {
            status: None,
            warnings: Value::Array(vec![]),
            errors: Value::Array(vec![]),
            name: None,
            starts_at: None,
            ends_at: None,
            code: None,
            pulled_backup_access_code_id: None,
            deleted: false,
        }
    }
}

impl Snapshot {
    fn of(fetched: &FetchedCode, store_pins: bool) -> Snapshot {
        let code = &fetched.code;
        Snapshot {
            status: Some(code.status.clone()),
            warnings: Value::Array(code.warnings.clone()),
            errors: Value::Array(code.errors.clone()),
            name: code.name.clone(),
            starts_at: code.starts_at.as_deref().and_then(parse_time),
            ends_at: code.ends_at.as_deref().and_then(parse_time),
            code: if store_pins { code.code.clone() } else { None },
            pulled_backup_access_code_id: code.pulled_backup_access_code_id.clone(),
            deleted: false,
        }
    }
}

/// The mirror row as it stands before a fetch is applied.
struct Current {
    status: Option<String>,
    warnings: Json<Value>,
    errors: Json<Value>,
    name: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    code: Option<String>,
    pulled_backup_access_code_id: Option<String>,
    deleted: bool,
    fetched_at: DateTime<Utc>,
    last_event_id: Option<String>,
    last_event_type: Option<String>,
    last_event_occurred_at: Option<DateTime<Utc>>,
}

impl Current {
    fn snapshot(&self, store_pins: bool) -> Snapshot {
        Snapshot {
            status: self.status.clone(),
            warnings: self.warnings.0.clone(),
            errors: self.errors.0.clone(),
            name: self.name.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            code: if store_pins { self.code.clone() } else { None },
            pulled_backup_access_code_id: self.pulled_backup_access_code_id.clone(),
            deleted: self.deleted,
        }
    }
    fn last_event(&self) -> EventRef {
        EventRef {
            event_id: self.last_event_id.clone(),
            event_type: self.last_event_type.clone(),
            occurred_at: self.last_event_occurred_at,
        }
    }
}

/// A change worth a history row and a NOTIFY.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    /// For `Changed`: what changed (empty when a deleted code is seen again).
    pub fields: Vec<FieldChange>,
}

/// What `observed` changes against the row as it stood (`None`: no row yet): a new
/// row is `Created`, a 404 of a live row `Deleted`, a live row whose status,
/// warnings, errors, name, time frame or PIN differ (or a deleted row seen again)
/// `Changed` (a backup newly pulled for it too). With `store_pins = false` no PIN is kept to compare: a PIN change is
/// then known from the event behind the fetch (`pin_event`: `access_code.code_changed`).
pub fn classify(before: Option<&Snapshot>, after: Option<&Snapshot>, pin_event: bool) -> Option<Change> {
    let (b, a) = match (before, after) {
        (None, Some(_)) => return Some(Change { kind: ChangeKind::Created, fields: vec![] }),
        (_, None) if before.is_some_and(|b| b.deleted) => return None,
        (_, None) => return Some(Change { kind: ChangeKind::Deleted, fields: vec![] }),
        (Some(b), Some(a)) => (b, a),
    };
    let fields: Vec<FieldChange> = [
        (FieldChange::Status, b.status != a.status),
        (FieldChange::Warnings, b.warnings != a.warnings),
        (FieldChange::Errors, b.errors != a.errors),
        (FieldChange::Name, b.name != a.name),
        (FieldChange::TimeFrame, b.starts_at != a.starts_at || b.ends_at != a.ends_at),
        (FieldChange::Code, b.code != a.code || (pin_event && !b.deleted)),
        (
            FieldChange::BackupPulled,
            a.pulled_backup_access_code_id.is_some()
                && a.pulled_backup_access_code_id != b.pulled_backup_access_code_id,
        ),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect();
    (b.deleted || !fields.is_empty()).then_some(Change { kind: ChangeKind::Changed, fields })
}

/// Applies `fetch` inside the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    fetch: &Fetch<'_>,
    observed: Observed<'_>,
    store_pins: bool,
) -> sqlx::Result<Applied> {
    // Serialised with `link_backup` of an original naming this code, so that one of
    // the two always sees the other's row, whichever commits first: the link's lock
    // is taken before the row lock, as `link_backup` takes them.
    let current = lock_current(conn, fetch.access_code_id).await?;
    if current.as_ref().is_some_and(|c| c.fetched_at > fetch.started_at) {
        return Ok(Applied::Stale);
    }
    // The row names the newest event seen; the history names the one behind this fetch.
    let newest = match &current {
        Some(c) if !fetch.trigger.supersedes(&c.last_event()) => c.last_event(),
        _ => fetch.trigger.clone(),
    };
    let before = current.as_ref().map(|c| c.snapshot(store_pins));
    let mut backup_of = None;
    let after = match observed {
        Observed::Found(code) => {
            backup_of = upsert_found(conn, fetch, code, &newest, store_pins).await?;
            if let Some(backup) = &code.code.pulled_backup_access_code_id {
                link_backup(conn, fetch.access_code_id, backup).await?;
            }
            Some(Snapshot::of(code, store_pins))
        }
        Observed::Gone => {
            mark_deleted(conn, fetch, &newest).await?;
            None
        }
    };
    let pin_event = !store_pins && fetch.trigger.event_type.as_deref() == Some(PIN_CHANGED_EVENT);
    let change = classify(before.as_ref(), after.as_ref(), pin_event);
    // A deleted code keeps its last known status, warnings and errors.
    let shown = after.or_else(|| before.clone()).unwrap_or_default();
    let previous_status = before.and_then(|b| b.status);
    if let Some(change) = &change {
        record_change(conn, fetch, change, previous_status.as_deref(), &shown, backup_of.as_deref()).await?;
    }
    Ok(Applied::Stored { change: change.map(|c| c.kind), previous_status, status: shown.status })
}

/// The code's row, locked, after the lock on its backup link
/// (`lock_access_code_for_write`, migrations/20261204000001).
async fn lock_current(conn: &mut PgConnection, access_code_id: &str) -> sqlx::Result<Option<Current>> {
    sqlx::query_as!(
        Current,
        r#"SELECT status, warnings AS "warnings!: Json<Value>", errors AS "errors!: Json<Value>",
                name, starts_at, ends_at, code, pulled_backup_access_code_id,
                deleted_at IS NOT NULL AS "deleted!", fetched_at AS "fetched_at!",
                last_event_id, last_event_type, last_event_occurred_at
         FROM lock_access_code_for_write($1)"#,
        access_code_id,
    )
    .fetch_optional(conn)
    .await
}

/// Writes the row of a code Seam returned; returns the code it is the backup of,
/// when an original names it (`backup_of_access_code_id`).
async fn upsert_found(
    conn: &mut PgConnection,
    fetch: &Fetch<'_>,
    fetched: &FetchedCode,
    newest: &EventRef,
    store_pins: bool,
) -> sqlx::Result<Option<String>> {
    let code = &fetched.code;
    let mut stored = fetched.raw.clone();
    if !store_pins {
        redact_pin(&mut stored);
    }
    let is_managed = fetch.endpoint == CodeEndpoint::Managed && code.is_managed.unwrap_or(true);
    let backup_of = sqlx::query_scalar!(
        r#"
        INSERT INTO access_codes AS a
            (access_code_id, device_id, workspace_id, name, type, status, is_managed,
             starts_at, ends_at, warnings, errors, code, access_code, deleted_at,
             last_event_id, last_event_type, last_event_occurred_at, fetched_at, status_changed_at,
             connected_account_id, seam_created_at, is_backup, is_backup_access_code_available,
             pulled_backup_access_code_id, is_offline_access_code, is_one_time_use,
             is_waiting_for_code_assignment, is_scheduled_on_device, pending_mutations,
             backup_of_access_code_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, $15, $16, $17, $17,
                $18, $19, $20, $21, $22, $23, $24, $25, $26, $27,
                (SELECT o.access_code_id FROM access_codes o
                 WHERE o.pulled_backup_access_code_id = $1 AND o.access_code_id <> $1
                 ORDER BY o.fetched_at DESC LIMIT 1))
        ON CONFLICT (access_code_id) DO UPDATE SET
            device_id = COALESCE(EXCLUDED.device_id, a.device_id),
            workspace_id = COALESCE(EXCLUDED.workspace_id, a.workspace_id),
            connected_account_id = COALESCE(EXCLUDED.connected_account_id, a.connected_account_id),
            status_changed_at = CASE WHEN a.status IS DISTINCT FROM EXCLUDED.status
                                     THEN EXCLUDED.fetched_at ELSE a.status_changed_at END,
            name = EXCLUDED.name, type = EXCLUDED.type, status = EXCLUDED.status,
            is_managed = EXCLUDED.is_managed, starts_at = EXCLUDED.starts_at,
            ends_at = EXCLUDED.ends_at, warnings = EXCLUDED.warnings,
            errors = EXCLUDED.errors, code = EXCLUDED.code,
            access_code = EXCLUDED.access_code, deleted_at = NULL,
            seam_created_at = EXCLUDED.seam_created_at, is_backup = EXCLUDED.is_backup,
            is_backup_access_code_available = EXCLUDED.is_backup_access_code_available,
            pulled_backup_access_code_id = EXCLUDED.pulled_backup_access_code_id,
            is_offline_access_code = EXCLUDED.is_offline_access_code,
            is_one_time_use = EXCLUDED.is_one_time_use,
            is_waiting_for_code_assignment = EXCLUDED.is_waiting_for_code_assignment,
            is_scheduled_on_device = EXCLUDED.is_scheduled_on_device,
            pending_mutations = EXCLUDED.pending_mutations,
            backup_of_access_code_id = COALESCE(EXCLUDED.backup_of_access_code_id, a.backup_of_access_code_id),
            last_event_id = EXCLUDED.last_event_id,
            last_event_type = EXCLUDED.last_event_type,
            last_event_occurred_at = EXCLUDED.last_event_occurred_at,
            fetched_at = EXCLUDED.fetched_at, updated_at = clock_timestamp()
        RETURNING backup_of_access_code_id
        "#,
        fetch.access_code_id,
        code.device_id.as_deref().or(fetch.device_id),
        code.workspace_id.as_deref().or(fetch.workspace_id),
        code.name,
        code.kind,
        code.status,
        is_managed,
        code.starts_at.as_deref().and_then(parse_time),
        code.ends_at.as_deref().and_then(parse_time),
        Json(&code.warnings) as _,
        Json(&code.errors) as _,
        if store_pins { code.code.as_deref() } else { None },
        Json(&stored) as _,
        newest.event_id,
        newest.event_type,
        newest.occurred_at,
        fetch.started_at,
        fetch.connected_account_id,
        code.created_at.as_deref().and_then(parse_time),
        code.is_backup,
        code.is_backup_access_code_available,
        code.pulled_backup_access_code_id,
        code.is_offline_access_code,
        code.is_one_time_use,
        code.is_waiting_for_code_assignment,
        code.is_scheduled_on_device,
        Json(&code.pending_mutations) as _,
    )
    .fetch_one(conn)
    .await?;
    Ok(backup_of)
}

/// A transaction-scoped lock on the link to the backup code `backup_id` (the same
/// key as `lock_access_code_for_write` takes).
async fn lock_backup_link(conn: &mut PgConnection, backup_id: &str) -> sqlx::Result<()> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('backup_link:' || $1, 0))", backup_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The original's side of a backup link: the backup's row, when mirrored, names
/// the original. (A backup not mirrored yet is fetched: `queue_missing_backups`.)
async fn link_backup(conn: &mut PgConnection, original: &str, backup: &str) -> sqlx::Result<()> {
    if backup == original {
        return Ok(());
    }
    lock_backup_link(conn, backup).await?;
    sqlx::query!(
        "UPDATE access_codes SET backup_of_access_code_id = $2, updated_at = clock_timestamp()
         WHERE access_code_id = $1 AND backup_of_access_code_id IS DISTINCT FROM $2",
        backup,
        original,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Links a backup the service just pulled (and mirrored from Seam's answer) to its
/// original at once, inside the caller's transaction: the original's row names it
/// only after its own re-fetch, which may come later (no worker runs beside
/// `pull-backup`).
pub async fn link_pulled_backup(conn: &mut PgConnection, original: &str, backup: &str) -> sqlx::Result<()> {
    link_backup(conn, original, backup).await
}

/// Queues a fetch of each backup that these codes name and the mirror does not
/// hold yet. Run after the fetch's own transaction (it locks queue rows, which a
/// fetch holding its own must not wait for); should it not run, the next fetch of
/// the original does it.
pub async fn queue_missing_backups(conn: &mut PgConnection, access_code_ids: &[String]) -> sqlx::Result<u64> {
    let missing = sqlx::query!(
        r#"SELECT o.pulled_backup_access_code_id AS "backup!", o.device_id, o.workspace_id, o.connected_account_id
           FROM access_codes o
           WHERE o.access_code_id = ANY($1) AND o.pulled_backup_access_code_id IS NOT NULL
             AND o.pulled_backup_access_code_id <> o.access_code_id
             AND NOT EXISTS (SELECT 1 FROM access_codes b WHERE b.access_code_id = o.pulled_backup_access_code_id)
           ORDER BY 1"#,
        access_code_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut requests: Vec<RefetchRequest> = missing
        .iter()
        .map(|row| RefetchRequest {
            access_code_id: &row.backup,
            endpoint: CodeEndpoint::Managed,
            device_id: row.device_id.as_deref(),
            workspace_id: row.workspace_id.as_deref(),
            connected_account_id: row.connected_account_id.as_deref(),
            event: None,
            requests: 1,
        })
        .collect();
    requests.dedup_by(|a, b| a.access_code_id == b.access_code_id);
    queue::enqueue_all(conn, &requests).await?;
    Ok(requests.len() as u64)
}

/// Marks a code Seam no longer has as deleted (creating the row if the code was
/// never seen alive), keeping what was last known of it.
async fn mark_deleted(conn: &mut PgConnection, fetch: &Fetch<'_>, newest: &EventRef) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        INSERT INTO access_codes AS a
            (access_code_id, device_id, workspace_id, deleted_at,
             last_event_id, last_event_type, last_event_occurred_at, fetched_at, connected_account_id)
        VALUES ($1, $2, $3, $7, $4, $5, $6, $7, $8)
        ON CONFLICT (access_code_id) DO UPDATE SET
            connected_account_id = COALESCE(a.connected_account_id, EXCLUDED.connected_account_id),
            deleted_at = COALESCE(a.deleted_at, EXCLUDED.deleted_at),
            last_event_id = EXCLUDED.last_event_id,
            last_event_type = EXCLUDED.last_event_type,
            last_event_occurred_at = EXCLUDED.last_event_occurred_at,
            fetched_at = EXCLUDED.fetched_at, updated_at = clock_timestamp()
        "#,
        fetch.access_code_id,
        fetch.device_id,
        fetch.workspace_id,
        newest.event_id,
        newest.event_type,
        newest.occurred_at,
        fetch.started_at,
        fetch.connected_account_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds the history row of a change and tells listeners about it, in one
/// statement of the fetch's transaction: the notification is the row's
/// `ChangeNotice::payload`, as the change stream sends it.
async fn record_change(
    conn: &mut PgConnection,
    fetch: &Fetch<'_>,
    change: &Change,
    previous_status: Option<&str>,
    now: &Snapshot,
    backup_of: Option<&str>,
) -> sqlx::Result<()> {
    let trigger = &fetch.trigger;
    let fields: Vec<String> = change.fields.iter().map(|field| field.as_str().to_owned()).collect();
    let count = |list: &Value| list.as_array().map_or(0, Vec::len) as i32;
    let notice = ChangeNotice {
        access_code_id: fetch.access_code_id.to_owned(),
        change: change.kind,
        changes: fields,
        origin: fetch.origin,
        previous_status: previous_status.map(str::to_owned),
        status: now.status.clone(),
        warnings: count(&now.warnings),
        errors: count(&now.errors),
        event_type: trigger.event_type.clone(),
        backup_access_code_id: now.pulled_backup_access_code_id.clone(),
        backup_of_access_code_id: backup_of.map(str::to_owned),
    };
    sqlx::query!(
        r#"
        WITH recorded AS (
            INSERT INTO access_code_history
                (access_code_id, change, previous_status, status, warnings, errors,
                 event_id, event_type, event_occurred_at, fetched_at, changes, origin,
                 backup_access_code_id, backup_of_access_code_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            RETURNING id
        )
        SELECT pg_notify($15, $16) FROM recorded
        "#,
        fetch.access_code_id,
        change.kind as _,
        previous_status,
        now.status,
        Json(&now.warnings) as _,
        Json(&now.errors) as _,
        trigger.event_id,
        trigger.event_type,
        trigger.occurred_at,
        fetch.started_at,
        &notice.changes,
        fetch.origin as _,
        now.pulled_backup_access_code_id,
        backup_of,
        CHANGE_CHANNEL,
        notice.payload().to_string(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One history row (`access_code_history.id`: the stream's event id) with what it
/// tells.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub id: i64,
    pub notice: ChangeNotice,
}

/// A change as its notification (`NOTIFY access_code_changed`) and the change
/// stream (`GET /v1/changes`) tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeNotice {
    pub access_code_id: String,
    pub change: ChangeKind,
    pub changes: Vec<String>,
    pub origin: Origin,
    pub previous_status: Option<String>,
    pub status: Option<String>,
    /// How many warnings and errors the code had after the change.
    pub warnings: i32,
    pub errors: i32,
    pub event_type: Option<String>,
    pub backup_access_code_id: Option<String>,
    pub backup_of_access_code_id: Option<String>,
}

impl ChangeNotice {
    /// The JSON of the notification and of the stream's event: the one place it is built.
    pub fn payload(&self) -> Value {
        let mut payload = serde_json::json!({
            "access_code_id": self.access_code_id,
            "change": self.change,
            "changes": self.changes,
            "origin": self.origin,
            "previous_status": self.previous_status,
            "status": self.status,
            "warnings": self.warnings,
            "errors": self.errors,
            "event_type": self.event_type,
        });
        // The backup relation, so that an application can hand the guest the backup PIN.
        if let Some(backup) = &self.backup_access_code_id {
            payload["backup_access_code_id"] = backup.as_str().into();
        }
        if let Some(original) = &self.backup_of_access_code_id {
            payload["backup_of_access_code_id"] = original.as_str().into();
        }
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(status: &str, warnings: Value, errors: Value, deleted: bool) -> Snapshot {
        Snapshot { status: Some(status.into()), warnings, errors, deleted, ..Snapshot::default() }
    }

    fn kind(change: Option<Change>) -> Option<ChangeKind> {
        change.map(|c| c.kind)
    }

    #[test]
    fn classifies_every_kind_of_change() {
        let set = snapshot("set", json!([]), json!([]), false);
        let setting = snapshot("setting", json!([]), json!([]), false);
        let warned = snapshot("set", json!([{"warning_code": "delay_in_setting_on_device"}]), json!([]), false);
        let failed = snapshot("set", json!([]), json!([{"error_code": "failed_to_set_on_device"}]), false);
        let deleted = Snapshot { deleted: true, ..set.clone() };
        let cases = [
            (None, Some(&set), Some(ChangeKind::Created)),
            (None, None, Some(ChangeKind::Deleted)),
            (Some(&setting), Some(&set), Some(ChangeKind::Changed)),
            (Some(&set), Some(&warned), Some(ChangeKind::Changed)),
            (Some(&set), Some(&failed), Some(ChangeKind::Changed)),
            (Some(&deleted), Some(&set), Some(ChangeKind::Changed)),
            (Some(&set), Some(&set), None),
            (Some(&set), None, Some(ChangeKind::Deleted)),
            (Some(&deleted), None, None),
        ];
        for (before, after, expected) in cases {
            assert_eq!(kind(classify(before, after, false)), expected, "{before:?} → {after:?}");
        }
    }

    #[test]
    fn names_what_changed_never_the_pin() {
        let set = Snapshot {
            code: Some("4821".into()),
            name: Some("Guest".into()),
            ..snapshot("set", json!([]), json!([]), false)
        };
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let cases = [
            (Snapshot { name: Some("Guest 2".into()), ..set.clone() }, false, vec![FieldChange::Name]),
            (Snapshot { starts_at: at("2026-12-01T10:00:00Z"), ..set.clone() }, false, vec![FieldChange::TimeFrame]),
            (Snapshot { ends_at: at("2026-12-02T10:00:00Z"), ..set.clone() }, false, vec![FieldChange::TimeFrame]),
            (Snapshot { code: Some("9911".into()), ..set.clone() }, false, vec![FieldChange::Code]),
            // store_pins = false: no PIN to compare; the event says so.
            (set.clone(), true, vec![FieldChange::Code]),
            (
                Snapshot { status: Some("setting".into()), name: None, ..set.clone() },
                false,
                vec![FieldChange::Status, FieldChange::Name],
            ),
        ];
        for (after, pin_event, fields) in cases {
            let change = classify(Some(&set), Some(&after), pin_event).unwrap();
            assert_eq!(change, Change { kind: ChangeKind::Changed, fields }, "{after:?}");
            assert!(!format!("{change:?}").contains("9911"));
        }
        assert_eq!(classify(Some(&set), Some(&set), false), None);
    }
}
