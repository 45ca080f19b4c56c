//! The mirror (`access_codes` + `access_code_history`): applies what a fetch saw.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::seam::event::{CodeEndpoint, parse_time, redact_pin};

/// Notified, in the same transaction, whenever a code's status, warnings or
/// errors change or it is deleted: `LISTEN access_code_changed`.
pub const CHANGE_CHANNEL: &str = "access_code_changed";
use crate::seam::client::FetchedCode;
use crate::store::queue::{Claim, EventRef};

/// What Seam said about a code.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    Found(&'a FetchedCode),
    /// 404: the code no longer exists.
    Gone,
}

/// How a fetch changed the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Changed,
    Deleted,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Changed => "changed",
            ChangeKind::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A newer fetch is already stored; this one was dropped.
    Stale,
    /// Stored; `change` is `None` when status, warnings and errors stayed the same.
    Stored { change: Option<ChangeKind>, previous_status: Option<String>, status: Option<String> },
}

#[derive(sqlx::FromRow)]
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

/// Applies a fetch started at `claim.claimed_at`, inside the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    claim: &Claim,
    observed: Observed<'_>,
    store_pins: bool,
) -> sqlx::Result<Applied> {
    let current: Option<Current> = sqlx::query_as(
        "SELECT status, warnings, errors, deleted_at IS NOT NULL AS deleted, fetched_at,
                last_event_id, last_event_type, last_event_occurred_at
         FROM access_codes WHERE access_code_id = $1 FOR UPDATE",
    )
    .bind(&claim.access_code_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(current) = &current
        && current.fetched_at > claim.claimed_at
    {
        return Ok(Applied::Stale);
    }
    // The row names the newest event seen; the history names the one behind this
    // fetch (none for sweeps and manual re-fetches).
    let trigger = claim.event();
    let event = newest_event(current.as_ref(), trigger.clone());
    let fetched_at = claim.claimed_at;

    let (change, status, warnings, errors) = match observed {
        Observed::Found(fetched) => {
            let code = &fetched.code;
            let warnings = Value::Array(code.warnings.clone());
            let errors = Value::Array(code.errors.clone());
            let change = match &current {
                None => Some(ChangeKind::Created),
                Some(c) if c.deleted || c.status.as_deref() != Some(&code.status) => Some(ChangeKind::Changed),
                Some(c) if c.warnings.0 != warnings || c.errors.0 != errors => Some(ChangeKind::Changed),
                Some(_) => None,
            };
            let mut stored = fetched.raw.clone();
            if !store_pins {
                redact_pin(&mut stored);
            }
            let is_managed = claim.endpoint() == CodeEndpoint::Managed && code.is_managed.unwrap_or(true);
            sqlx::query(
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
            )
            .bind(&claim.access_code_id)
            .bind(code.device_id.as_ref().or(claim.device_id.as_ref()))
            .bind(code.workspace_id.as_ref().or(claim.workspace_id.as_ref()))
            .bind(&code.name)
            .bind(&code.kind)
            .bind(&code.status)
            .bind(is_managed)
            .bind(code.starts_at.as_deref().and_then(parse_time))
            .bind(code.ends_at.as_deref().and_then(parse_time))
            .bind(Json(&warnings))
            .bind(Json(&errors))
            .bind(if store_pins { code.code.as_deref() } else { None })
            .bind(Json(&stored))
            .bind(&event.event_id)
            .bind(&event.event_type)
            .bind(event.occurred_at)
            .bind(fetched_at)
            .execute(&mut *conn)
            .await?;
            (change, Some(code.status.clone()), warnings, errors)
        }
        Observed::Gone => {
            let change = match &current {
                Some(c) if c.deleted => None,
                _ => Some(ChangeKind::Deleted),
            };
            sqlx::query(
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
            )
            .bind(&claim.access_code_id)
            .bind(&claim.device_id)
            .bind(&claim.workspace_id)
            .bind(&event.event_id)
            .bind(&event.event_type)
            .bind(event.occurred_at)
            .bind(fetched_at)
            .execute(&mut *conn)
            .await?;
            let status = current.as_ref().and_then(|c| c.status.clone());
            let warnings = current.as_ref().map_or(Value::Array(vec![]), |c| c.warnings.0.clone());
            let errors = current.as_ref().map_or(Value::Array(vec![]), |c| c.errors.0.clone());
            (change, status, warnings, errors)
        }
    };

    let previous_status = current.and_then(|c| c.status);
    if let Some(kind) = change {
        sqlx::query(
            r#"
            INSERT INTO access_code_history
                (access_code_id, change, previous_status, status, warnings, errors,
                 event_id, event_type, event_occurred_at, fetched_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            "#,
        )
        .bind(&claim.access_code_id)
        .bind(kind.as_str())
        .bind(&previous_status)
        .bind(&status)
        .bind(Json(&warnings))
        .bind(Json(&errors))
        .bind(&trigger.event_id)
        .bind(&trigger.event_type)
        .bind(trigger.occurred_at)
        .bind(fetched_at)
        .execute(&mut *conn)
        .await?;
        let payload = serde_json::json!({
            "access_code_id": claim.access_code_id,
            "change": kind.as_str(),
            "previous_status": previous_status,
            "status": status,
            "warnings": warnings.as_array().map_or(0, Vec::len),
            "errors": errors.as_array().map_or(0, Vec::len),
            "event_type": trigger.event_type,
        });
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGE_CHANNEL)
            .bind(payload.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(Applied::Stored { change, previous_status, status })
}

/// The mirror names the newest event it has seen for a code, whatever order
/// events arrived in.
fn newest_event(current: Option<&Current>, claimed: EventRef) -> EventRef {
    match current {
        Some(c) if c.last_event_occurred_at.is_some() && c.last_event_occurred_at > claimed.occurred_at => EventRef {
            event_id: c.last_event_id.clone(),
            event_type: c.last_event_type.clone(),
            occurred_at: c.last_event_occurred_at,
        },
        _ => claimed,
    }
}
