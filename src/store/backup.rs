//! Backup access code pulls (`backup_pulls`): one decision per code, ever, and its
//! state machine `decided` → `sending` → `pulled` | `failed`, recorded before and
//! after each call to Seam. Claimed like the re-fetch queue (`FOR UPDATE SKIP LOCKED`
//! and a lease), so one replica, one worker, pulls for a code at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::seam::workspaces::ClaimFilter;

crate::text_enum::text_enum! {
    /// Why the service decided to pull a backup for a code.
    pub enum PullReason {
        /// The code got Seam's `failed_to_set_on_device` error.
        FailedToSet = "failed_to_set_on_device",
        /// Still not `set` `backup.pull_after_seconds` after its `starts_at`.
        NotSetAfterStart = "not_set_after_start",
        /// `seam-access-sync pull-backup`.
        ByHand = "by_hand",
    }
}

crate::text_enum::text_enum! {
    /// Where a pull stands.
    pub enum PullState {
        /// Decided; no call made yet.
        Decided = "decided",
        /// Recorded before a call: the call may have reached Seam. Resolved by
        /// fetching the code again (its `pulled_backup_access_code_id`) before any
        /// new call.
        Sending = "sending",
        Pulled = "pulled",
        Failed = "failed",
    }
}

/// A pull this worker holds until `claimed_until`.
#[derive(Debug, Clone)]
pub struct PullClaim {
    pub access_code_id: String,
    pub workspace_id: Option<String>,
    pub reason: PullReason,
    /// The state when claimed: `Sending` means a previous call may have pulled.
    pub state: PullState,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub claim_token: Uuid,
    pub claimed_at: DateTime<Utc>,
}

/// Decides to pull for codes that need it: managed, not deleted, `time_bound`,
/// with a backup available and none pulled, not a backup themselves, not ended,
/// that got `failed_to_set_on_device` or are still not `set` `pull_after_seconds`
/// after `starts_at`. At most once per code: a code decided on before is never
/// decided on again. Returns the codes decided on now.
pub async fn decide_due(pool: &PgPool, pull_after_seconds: u64) -> sqlx::Result<Vec<(String, PullReason)>> {
    sqlx::query!(
        r#"
        INSERT INTO backup_pulls (access_code_id, workspace_id, reason)
        SELECT a.access_code_id, a.workspace_id,
               CASE WHEN a.errors @> '[{"error_code": "failed_to_set_on_device"}]'
                    THEN 'failed_to_set_on_device' ELSE 'not_set_after_start' END
        FROM access_codes a
        WHERE a.deleted_at IS NULL AND a.is_managed AND a.type = 'time_bound'
          AND a.is_backup_access_code_available IS TRUE AND a.is_backup IS NOT TRUE
          AND a.pulled_backup_access_code_id IS NULL
          AND (a.ends_at IS NULL OR a.ends_at > now())
          AND (a.errors @> '[{"error_code": "failed_to_set_on_device"}]'
               OR (a.status IS DISTINCT FROM 'set' AND a.starts_at + make_interval(secs => $1) <= now()))
        ORDER BY a.access_code_id
        ON CONFLICT (access_code_id) DO NOTHING
        RETURNING access_code_id, reason AS "reason: PullReason"
        "#,
        pull_after_seconds as f64,
    )
    .fetch_all(pool)
    .await
    .map(|rows| rows.into_iter().map(|row| (row.access_code_id, row.reason)).collect())
}

/// What `decide_by_hand` found.
#[derive(Debug, Clone, PartialEq)]
pub enum ByHand {
    /// Decided now (or a failed pull armed again): to be pulled.
    Decided,
    /// A pull is decided or under way already.
    Pending,
    /// Pulled before: this backup.
    Pulled(Option<String>),
}

/// `pull-backup <id>`: decides to pull for the code now; a failed pull is armed
/// again (the operator asked), a pulled one is not.
pub async fn decide_by_hand(pool: &PgPool, access_code_id: &str, workspace_id: Option<&str>) -> sqlx::Result<ByHand> {
    let row = sqlx::query!(
        r#"
        INSERT INTO backup_pulls (access_code_id, workspace_id, reason) VALUES ($1, $2, 'by_hand')
        ON CONFLICT (access_code_id) DO UPDATE SET
            state = 'decided', reason = 'by_hand', attempts = 0, next_attempt_at = now(),
            claim_token = NULL, claimed_until = NULL, last_error = NULL, finished_at = NULL,
            decided_at = now(), updated_at = now()
        WHERE backup_pulls.state = 'failed'
        RETURNING 1 AS "one!"
        "#,
        access_code_id,
        workspace_id,
    )
    .fetch_optional(pool)
    .await?;
    if row.is_some() {
        return Ok(ByHand::Decided);
    }
    let existing = sqlx::query!(
        r#"SELECT state AS "state: PullState", backup_access_code_id FROM backup_pulls WHERE access_code_id = $1"#,
        access_code_id,
    )
    .fetch_one(pool)
    .await?;
    Ok(match existing.state {
        PullState::Pulled => ByHand::Pulled(existing.backup_access_code_id),
        _ => ByHand::Pending,
    })
}

/// Claims the pull due longest (`only`: that code's only), if any, for `lease`.
/// An expired lease (a process killed mid-pull) is claimable again; its state
/// (`sending`) tells the next claimer to check before calling.
pub async fn claim_next(
    pool: &PgPool,
    lease: Duration,
    filter: &ClaimFilter,
    only: Option<&str>,
) -> sqlx::Result<Option<PullClaim>> {
    sqlx::query_as!(
        PullClaim,
        r#"
        UPDATE backup_pulls p SET
            claim_token = gen_random_uuid(),
            claimed_until = now() + make_interval(secs => $1),
            attempts = p.attempts + 1,
            updated_at = now()
        WHERE p.access_code_id = (
            SELECT access_code_id FROM backup_pulls
            WHERE state IN ('decided', 'sending')
              AND next_attempt_at <= now()
              AND (claimed_until IS NULL OR claimed_until < now())
              AND ($2 OR workspace_id = ANY($3) OR ($4 AND workspace_id IS NULL))
              AND ($5::text IS NULL OR access_code_id = $5)
            ORDER BY next_attempt_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING p.access_code_id, p.workspace_id, p.reason AS "reason: PullReason",
                  p.state AS "state: PullState", p.attempts, p.claim_token AS "claim_token!",
                  now() AS "claimed_at!"
        "#,
        lease.as_secs_f64(),
        filter.any,
        &filter.workspace_ids,
        filter.without_workspace,
        only,
    )
    .fetch_optional(pool)
    .await
}

/// Records, before the call, that it is about to be made (committed on return).
/// False when the claim was lost.
pub async fn mark_sending(pool: &PgPool, claim: &PullClaim) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "UPDATE backup_pulls SET state = 'sending', sent_at = now(), updated_at = now()
         WHERE access_code_id = $1 AND claim_token = $2",
        claim.access_code_id,
        claim.claim_token,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Whether the claim is still ours; locks the row until the transaction ends.
pub async fn lock_claim(conn: &mut PgConnection, claim: &PullClaim) -> sqlx::Result<bool> {
    let row = sqlx::query_scalar!(
        r#"SELECT 1 AS "one!" FROM backup_pulls WHERE access_code_id = $1 AND claim_token = $2 FOR UPDATE"#,
        claim.access_code_id,
        claim.claim_token,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Ends a pull inside the caller's transaction (after `lock_claim`): `pulled` with
/// the backup's id, or `failed` with why.
pub async fn finish(conn: &mut PgConnection, claim: &PullClaim, result: Result<&str, &str>) -> sqlx::Result<()> {
    let (state, backup, error) = match result {
        Ok(backup) => (PullState::Pulled, Some(backup), None),
        Err(error) => (PullState::Failed, None, Some(error)),
    };
    sqlx::query!(
        "UPDATE backup_pulls SET state = $3, backup_access_code_id = $4, last_error = $5,
             claim_token = NULL, claimed_until = NULL, finished_at = now(), updated_at = now()
         WHERE access_code_id = $1 AND claim_token = $2",
        claim.access_code_id,
        claim.claim_token,
        state as _,
        backup,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Tries again after `delay` (the state stays: a `sending` row is checked before
/// the next call); `counts` false gives the attempt back (a rejected key). False
/// when the claim was lost.
pub async fn retry(pool: &PgPool, claim: &PullClaim, delay: Duration, counts: bool, error: &str) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "UPDATE backup_pulls SET claim_token = NULL, claimed_until = NULL,
             attempts = attempts - $3, next_attempt_at = now() + make_interval(secs => $4),
             last_error = $5, updated_at = now()
         WHERE access_code_id = $1 AND claim_token = $2",
        claim.access_code_id,
        claim.claim_token,
        i32::from(!counts),
        delay.as_secs_f64(),
        error,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// A pull that failed, for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedPull {
    pub access_code_id: String,
    pub reason: PullReason,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Pulls by state, the failed ones, and the codes left alone, for `status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullStatus {
    pub decided: i64,
    pub sending: i64,
    pub pulled: i64,
    pub failed: Vec<FailedPull>,
    /// Live time-bound or ongoing codes that failed to set or are not set after their
    /// start, but are not pulled for: not time-bound.
    pub left_alone_not_time_bound: i64,
    /// … or time-bound, but Seam says no backup is available.
    pub left_alone_no_backup_available: i64,
}

pub async fn status(pool: &PgPool, pull_after_seconds: u64) -> sqlx::Result<PullStatus> {
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE state = 'decided') AS "decided!",
                  count(*) FILTER (WHERE state = 'sending') AS "sending!",
                  count(*) FILTER (WHERE state = 'pulled') AS "pulled!"
           FROM backup_pulls"#
    )
    .fetch_one(pool)
    .await?;
    let failed = sqlx::query_as!(
        FailedPull,
        r#"SELECT access_code_id, reason AS "reason: PullReason", attempts, last_error, finished_at
           FROM backup_pulls WHERE state = 'failed' ORDER BY finished_at DESC NULLS LAST, access_code_id LIMIT 100"#
    )
    .fetch_all(pool)
    .await?;
    let left = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE type IS DISTINCT FROM 'time_bound') AS "not_time_bound!",
                  count(*) FILTER (WHERE type = 'time_bound'
                                   AND is_backup_access_code_available IS NOT TRUE) AS "no_backup!"
           FROM access_codes a
           WHERE deleted_at IS NULL AND is_managed AND is_backup IS NOT TRUE
             AND pulled_backup_access_code_id IS NULL
             AND NOT EXISTS (SELECT 1 FROM backup_pulls p WHERE p.access_code_id = a.access_code_id)
             AND (errors @> '[{"error_code": "failed_to_set_on_device"}]'
                  OR (type = 'time_bound' AND status IS DISTINCT FROM 'set'
                      AND starts_at + make_interval(secs => $1) <= now()
                      AND (ends_at IS NULL OR ends_at > now())))"#,
        pull_after_seconds as f64,
    )
    .fetch_one(pool)
    .await?;
    Ok(PullStatus {
        decided: counts.decided,
        sending: counts.sending,
        pulled: counts.pulled,
        failed,
        left_alone_not_time_bound: left.not_time_bound,
        left_alone_no_backup_available: left.no_backup,
    })
}

/// A mirrored code, as far as pulling a backup for it goes (`pull-backup`).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub kind: Option<String>,
    pub is_managed: bool,
    pub is_backup: Option<bool>,
    pub is_backup_access_code_available: Option<bool>,
    pub deleted: bool,
    pub workspace_id: Option<String>,
}

impl Candidate {
    /// Why no backup can be pulled for it, if the mirror knows (Seam pulls backups
    /// for managed, time-bound codes whose device has one available).
    pub fn why_not(&self) -> Option<String> {
        if self.deleted {
            Some("no longer exists (deleted in the mirror)".into())
        } else if !self.is_managed {
            Some("is unmanaged: Seam pulls backups for managed codes only".into())
        } else if self.is_backup == Some(true) {
            Some("is a backup code itself".into())
        } else if self.kind.as_deref() != Some("time_bound") {
            Some(format!(
                "is not time_bound (type {}): Seam pulls backups for time-bound codes only",
                self.kind.as_deref().unwrap_or("unknown")
            ))
        } else if self.is_backup_access_code_available == Some(false) {
            Some("has no backup access code available (is_backup_access_code_available = false)".into())
        } else {
            None
        }
    }
}

/// The code as mirrored, if it is.
pub async fn candidate(pool: &PgPool, access_code_id: &str) -> sqlx::Result<Option<Candidate>> {
    sqlx::query_as!(
        Candidate,
        r#"SELECT type AS kind, is_managed, is_backup, is_backup_access_code_available,
                  deleted_at IS NOT NULL AS "deleted!", workspace_id
           FROM access_codes WHERE access_code_id = $1"#,
        access_code_id,
    )
    .fetch_optional(pool)
    .await
}

/// The PIN the mirror holds for a code (only with `store_pins = true`).
pub async fn mirrored_pin(pool: &PgPool, access_code_id: &str) -> sqlx::Result<Option<String>> {
    Ok(sqlx::query_scalar!("SELECT code FROM access_codes WHERE access_code_id = $1", access_code_id)
        .fetch_optional(pool)
        .await?
        .flatten())
}
