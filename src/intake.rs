//! Persists one verified event and, for `access_code.*` events, its re-fetch
//! request, in one transaction: what is acknowledged is never lost.

use sqlx::PgPool;

use crate::event::{EventAction, SeamEvent};
use crate::queue::{self, EventRef, RefetchRequest};

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

/// Stores `event`, delivered as `delivery_id` (None for events that did not come
/// by webhook). Commits before returning.
pub async fn store_event(pool: &PgPool, delivery_id: Option<&str>, event: &SeamEvent) -> sqlx::Result<Stored> {
    let action = event.action();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        r#"
        INSERT INTO seam_events
            (event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
             occurred_at, action, payload)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(&event.event_id)
    .bind(delivery_id)
    .bind(&event.event_type)
    .bind(&event.access_code_id)
    .bind(&event.device_id)
    .bind(&event.workspace_id)
    .bind(event.occurred_at)
    .bind(match action {
        EventAction::Refetch { .. } => "refetch",
        EventAction::Ignore => "ignored",
    })
    .bind(sqlx::types::Json(&event.payload))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(Stored::Duplicate);
    }
    if let EventAction::Refetch { access_code_id, endpoint } = &action {
        let request = RefetchRequest {
            access_code_id,
            endpoint: *endpoint,
            device_id: event.device_id.as_deref(),
            workspace_id: event.workspace_id.as_deref(),
            event: Some(EventRef {
                event_id: Some(event.event_id.clone()),
                event_type: Some(event.event_type.clone()),
                occurred_at: event.occurred_at,
            }),
        };
        queue::enqueue(&mut tx, &request).await?;
    }
    tx.commit().await?;
    Ok(Stored::New)
}
