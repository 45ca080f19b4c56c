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

/// Notified, in the same transaction, whenever a code's status, warnings or
/// errors change or it is deleted: `LISTEN access_code_changed`.
pub const CHANGE_CHANNEL: &str = "access_code_changed";

/// One fetch of a code, as the mirror needs to know it.
#[derive(Debug, Clone)]
pub struct Fetch<'a> {
    pub access_code_id: &'a str,
    /// The endpoint that answered.
    pub endpoint: CodeEndpoint,
    /// From the events, for a code Seam no longer returns.
    pub device_id: Option<&'a str>,
    pub workspace_id: Option<&'a str>,
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
    /// Stored; `change` is `None` when status, warnings and errors stayed the same.
    Stored { change: Option<ChangeKind>, previous_status: Option<String>, status: Option<String> },
}

/// The part of a mirror row that a change is judged on.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: Option<String>,
    pub warnings: Value,
    pub errors: Value,
    pub deleted: bool,
}

impl Default for Snapshot {
    /// A code never seen alive: no status, no warnings, no errors.
    fn default() -> Snapshot {
        Snapshot { status: None, warnings: Value::Array(vec![]), errors: Value::Array(vec![]), deleted: false }
    }
}

impl Snapshot {
    fn of(code: &FetchedCode) -> Snapshot {
        Snapshot {
            status: Some(code.code.status.clone()),
            warnings: Value::Array(code.code.warnings.clone()),
            errors: Value::Array(code.code.errors.clone()),
            deleted: false,
        }
    }
}

/// The mirror row as it stands before a fetch is applied.
struct Current {
    status: Option<String>,
    warnings: Json<Value>,
    errors: Json<Value>,
    deleted: bool,
    fetched_at: DateTime<Utc>,
    last_event_id: Option<String>,
    last_event_type: Option<String>,
    last_event_occurred_at: Option<DateTime<Utc>>,
}

impl Current {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            status: self.status.clone(),
            warnings: self.warnings.0.clone(),
            errors: self.errors.0.clone(),
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

/// What `observed` changes against the row as it stood (`None`: no row yet):
/// a new row is `Created`, a 404 of a live row `Deleted`, a different status,
/// warning list or error list (or a deleted row seen again) `Changed`.
pub fn classify(before: Option<&Snapshot>, after: Option<&Snapshot>) -> Option<ChangeKind> {
    match (before, after) {
        (None, Some(_)) => Some(ChangeKind::Created),
        (_, None) if before.is_some_and(|b| b.deleted) => None,
        (_, None) => Some(ChangeKind::Deleted),
        (Some(b), Some(a)) if b.deleted || b.status != a.status => Some(ChangeKind::Changed),
        (Some(b), Some(a)) if b.warnings != a.warnings || b.errors != a.errors => Some(ChangeKind::Changed),
        (Some(_), Some(_)) => None,
    }
}

/// Applies `fetch` inside the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    fetch: &Fetch<'_>,
    observed: Observed<'_>,
    store_pins: bool,
) -> sqlx::Result<Applied> {
    let current = lock_current(conn, fetch.access_code_id).await?;
    if current.as_ref().is_some_and(|c| c.fetched_at > fetch.started_at) {
        return Ok(Applied::Stale);
    }
    // The row names the newest event seen; the history names the one behind this fetch.
    let newest = match &current {
        Some(c) if !fetch.trigger.supersedes(&c.last_event()) => c.last_event(),
        _ => fetch.trigger.clone(),
    };
    let before = current.as_ref().map(Current::snapshot);
    let after = match observed {
        Observed::Found(code) => {
            upsert_found(conn, fetch, code, &newest, store_pins).await?;
            Some(Snapshot::of(code))
        }
        Observed::Gone => {
            mark_deleted(conn, fetch, &newest).await?;
            None
        }
    };
    let change = classify(before.as_ref(), after.as_ref());
    // A deleted code keeps its last known status, warnings and errors.
    let shown = after.or_else(|| before.clone()).unwrap_or_default();
    let previous_status = before.and_then(|b| b.status);
    if let Some(kind) = change {
        record_change(conn, fetch, kind, previous_status.as_deref(), &shown).await?;
    }
    Ok(Applied::Stored { change, previous_status, status: shown.status })
}

async fn lock_current(conn: &mut PgConnection, access_code_id: &str) -> sqlx::Result<Option<Current>> {
    sqlx::query_as!(
        Current,
        r#"SELECT status, warnings AS "warnings: Json<Value>", errors AS "errors: Json<Value>",
                deleted_at IS NOT NULL AS "deleted!", fetched_at,
                last_event_id, last_event_type, last_event_occurred_at
         FROM access_codes WHERE access_code_id = $1 FOR UPDATE"#,
        access_code_id,
    )
    .fetch_optional(conn)
    .await
}

/// Writes the row of a code Seam returned.
async fn upsert_found(
    conn: &mut PgConnection,
    fetch: &Fetch<'_>,
    fetched: &FetchedCode,
    newest: &EventRef,
    store_pins: bool,
) -> sqlx::Result<()> {
    let code = &fetched.code;
    let mut stored = fetched.raw.clone();
    if !store_pins {
        redact_pin(&mut stored);
    }
    let is_managed = fetch.endpoint == CodeEndpoint::Managed && code.is_managed.unwrap_or(true);
    sqlx::query!(
        r#"
        INSERT INTO access_codes AS a
            (access_code_id, device_id, workspace_id, name, type, status, is_managed,
             starts_at, ends_at, warnings, errors, code, access_code, deleted_at,
             last_event_id, last_event_type, last_event_occurred_at, fetched_at, status_changed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, $15, $16, $17, $17)
        ON CONFLICT (access_code_id) DO UPDATE SET
            device_id = COALESCE(EXCLUDED.device_id, a.device_id),
            workspace_id = COALESCE(EXCLUDED.workspace_id, a.workspace_id),
            status_changed_at = CASE WHEN a.status IS DISTINCT FROM EXCLUDED.status
                                     THEN EXCLUDED.fetched_at ELSE a.status_changed_at END,
            name = EXCLUDED.name, type = EXCLUDED.type, status = EXCLUDED.status,
            is_managed = EXCLUDED.is_managed, starts_at = EXCLUDED.starts_at,
            ends_at = EXCLUDED.ends_at, warnings = EXCLUDED.warnings,
            errors = EXCLUDED.errors, code = EXCLUDED.code,
            access_code = EXCLUDED.access_code, deleted_at = NULL,
            last_event_id = EXCLUDED.last_event_id,
            last_event_type = EXCLUDED.last_event_type,
            last_event_occurred_at = EXCLUDED.last_event_occurred_at,
            fetched_at = EXCLUDED.fetched_at, updated_at = clock_timestamp()
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
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a code Seam no longer has as deleted (creating the row if the code was
/// never seen alive), keeping what was last known of it.
async fn mark_deleted(conn: &mut PgConnection, fetch: &Fetch<'_>, newest: &EventRef) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        INSERT INTO access_codes AS a
            (access_code_id, device_id, workspace_id, deleted_at,
             last_event_id, last_event_type, last_event_occurred_at, fetched_at)
        VALUES ($1, $2, $3, $7, $4, $5, $6, $7)
        ON CONFLICT (access_code_id) DO UPDATE SET
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
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds the history row of a change and tells listeners about it, in the same
/// transaction.
async fn record_change(
    conn: &mut PgConnection,
    fetch: &Fetch<'_>,
    kind: ChangeKind,
    previous_status: Option<&str>,
    now: &Snapshot,
) -> sqlx::Result<()> {
    let trigger = &fetch.trigger;
    sqlx::query!(
        r#"
        INSERT INTO access_code_history
            (access_code_id, change, previous_status, status, warnings, errors,
             event_id, event_type, event_occurred_at, fetched_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        "#,
        fetch.access_code_id,
        kind as _,
        previous_status,
        now.status,
        Json(&now.warnings) as _,
        Json(&now.errors) as _,
        trigger.event_id,
        trigger.event_type,
        trigger.occurred_at,
        fetch.started_at,
    )
    .execute(&mut *conn)
    .await?;
    let payload = serde_json::json!({
        "access_code_id": fetch.access_code_id,
        "change": kind,
        "previous_status": previous_status,
        "status": now.status,
        "warnings": now.warnings.as_array().map_or(0, Vec::len),
        "errors": now.errors.as_array().map_or(0, Vec::len),
        "event_type": trigger.event_type,
    });
    sqlx::query!("SELECT pg_notify($1, $2)", CHANGE_CHANNEL, payload.to_string()).execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(status: &str, warnings: Value, errors: Value, deleted: bool) -> Snapshot {
        Snapshot { status: Some(status.into()), warnings, errors, deleted }
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
            assert_eq!(classify(before, after), expected, "{before:?} → {after:?}");
        }
    }
}
