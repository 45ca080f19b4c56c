//! Reading the mirror's history as a stream of changes (`GET /v1/changes`, the
//! console's live updates): rows after the last one sent, in id order, each exactly
//! once.
//!
//! History ids come from a sequence, so a transaction can take id 10, another id 11
//! and commit first: a reader that saw 11 and moved on would miss 10 for ever. The
//! reader therefore sends ids in an unbroken run and stops before a gap, until the gap
//! is explained: every transaction that was running when the gap was first seen has
//! ended (the snapshot's `xmin` has passed the `xmax` of the read that saw the gap).
//! Any id still missing then was rolled back and never comes. A gap costs one short
//! wait; it is rare (a rollback, or two changes committing out of order).

use sqlx::PgPool;

use crate::store::mirror::{ChangeKind, ChangeNotice, ChangeRecord, Origin};

/// One read: the rows and the snapshot they were read with.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesRead {
    /// The oldest transaction still running when the rows were read (`pg_snapshot_xmin`).
    pub xmin: i64,
    /// The first transaction id not yet assigned then (`pg_snapshot_xmax`).
    pub xmax: i64,
    pub records: Vec<ChangeRecord>,
}

/// The history rows after `after_id` (at most `limit`), with the snapshot they were
/// read under (0 and 0 when there are none: nothing then depends on it).
///
/// One statement, so one snapshot holds for the rows and its bounds alike, and no
/// transaction is begun: a stream whose client goes away mid-read leaves nothing open.
pub async fn read_after(pool: &PgPool, after_id: i64, limit: i64) -> sqlx::Result<ChangesRead> {
    let rows = sqlx::query!(
        r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS "xmin!",
                  pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS "xmax!",
                  id, access_code_id, change AS "change: ChangeKind", changes, origin AS "origin: Origin",
                  previous_status, status, jsonb_array_length(warnings) AS "warnings!",
                  jsonb_array_length(errors) AS "errors!", event_type, backup_access_code_id,
                  backup_of_access_code_id
           FROM access_code_history WHERE id > $1 ORDER BY id LIMIT $2"#,
        after_id,
        limit,
    )
    .fetch_all(pool)
    .await?;
    let (xmin, xmax) = rows.first().map_or((0, 0), |row| (row.xmin, row.xmax));
    let records = rows
        .into_iter()
        .map(|row| ChangeRecord {
            id: row.id,
            notice: ChangeNotice {
                access_code_id: row.access_code_id,
                change: row.change,
                changes: row.changes,
                origin: row.origin,
                previous_status: row.previous_status,
                status: row.status,
                warnings: row.warnings,
                errors: row.errors,
                event_type: row.event_type,
                backup_access_code_id: row.backup_access_code_id,
                backup_of_access_code_id: row.backup_of_access_code_id,
            },
        })
        .collect();
    Ok(ChangesRead { xmin, xmax, records })
}

/// The newest history id (0 when there is none): where a stream opened without
/// `Last-Event-ID` starts.
pub async fn latest_id(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT coalesce(max(id), 0) AS "id!" FROM access_code_history"#).fetch_one(pool).await
}

/// Where a reader stands: the last id sent, and the gap it is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub last_id: i64,
    /// Set while the next id is missing: the `xmax` of the read that first saw the gap.
    pub gap_horizon: Option<i64>,
}

impl Position {
    pub fn after(last_id: i64) -> Position {
        Position { last_id, gap_horizon: None }
    }

    /// How many of `read.records` may be sent now (a prefix), moving the position
    /// past them. Returns `(count, blocked)`: `blocked` when a gap holds the rest back.
    pub fn advance(&mut self, read: &ChangesRead) -> (usize, bool) {
        let mut sent = 0;
        for record in &read.records {
            let next = record.id == self.last_id + 1;
            let explained = self.gap_horizon.is_some_and(|horizon| read.xmin >= horizon);
            if !next && !explained {
                self.gap_horizon.get_or_insert(read.xmax);
                return (sent, true);
            }
            self.last_id = record.id;
            self.gap_horizon = None;
            sent += 1;
        }
        (sent, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64) -> ChangeRecord {
        ChangeRecord {
            id,
            notice: ChangeNotice {
                access_code_id: format!("ac_{id}"),
                change: ChangeKind::Created,
                changes: vec![],
                origin: Origin::Fetch,
                previous_status: None,
                status: Some("set".into()),
                warnings: 0,
                errors: 0,
                event_type: None,
                backup_access_code_id: None,
                backup_of_access_code_id: None,
            },
        }
    }

    fn read(xmin: i64, xmax: i64, ids: &[i64]) -> ChangesRead {
        ChangesRead { xmin, xmax, records: ids.iter().copied().map(record).collect() }
    }

    #[test]
    fn an_unbroken_run_is_sent_whole() {
        let mut at = Position::after(4);
        assert_eq!(at.advance(&read(100, 100, &[5, 6, 7])), (3, false));
        assert_eq!(at, Position::after(7));
    }

    #[test]
    fn a_gap_holds_back_what_follows_until_every_transaction_then_running_has_ended() {
        let mut at = Position::after(9);
        // 10 is taken by a transaction still running (xid 95); 11 is committed.
        assert_eq!(at.advance(&read(95, 120, &[11])), (0, true));
        assert_eq!(at, Position { last_id: 9, gap_horizon: Some(120) });
        // Still running: nothing yet, and the horizon stays that of the first sighting.
        assert_eq!(at.advance(&read(110, 130, &[11])), (0, true));
        assert_eq!(at.gap_horizon, Some(120));
        // It committed: 10 arrives in order.
        assert_eq!(at.advance(&read(121, 130, &[10, 11])), (2, false));
        assert_eq!(at, Position::after(11));
    }

    #[test]
    fn a_gap_left_by_a_rollback_is_passed_once_it_is_explained() {
        let mut at = Position::after(0);
        assert_eq!(at.advance(&read(50, 60, &[2, 3])), (0, true));
        // Everything running at the first sighting has ended and 1 is still missing.
        assert_eq!(at.advance(&read(60, 61, &[2, 3, 5])), (2, true));
        assert_eq!(at, Position { last_id: 3, gap_horizon: Some(61) });
        assert_eq!(at.advance(&read(61, 61, &[5])), (1, false));
        assert_eq!(at.last_id, 5);
    }
}
