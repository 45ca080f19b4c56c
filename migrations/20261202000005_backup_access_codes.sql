-- Issue 15: backup access codes.

-- The backup side of the link: the code this one is the pulled backup of (the
-- original's `pulled_backup_access_code_id` is the other side).
ALTER TABLE access_codes ADD COLUMN backup_of_access_code_id text;
CREATE INDEX access_codes_pulled_backup ON access_codes (pulled_backup_access_code_id)
    WHERE pulled_backup_access_code_id IS NOT NULL;

-- One decision to pull a backup per code, ever: `decided` → `sending` (recorded
-- before the call) → `pulled` | `failed`. A row found in `sending` may have been
-- pulled by Seam already: the original is fetched again before any new call.
-- Claimed like the re-fetch queue (FOR UPDATE SKIP LOCKED + lease).
CREATE TABLE backup_pulls (
    access_code_id text PRIMARY KEY,
    workspace_id text,
    reason text NOT NULL CHECK (reason IN ('failed_to_set_on_device', 'not_set_after_start', 'by_hand')),
    state text NOT NULL DEFAULT 'decided' CHECK (state IN ('decided', 'sending', 'pulled', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_token uuid,
    claimed_until timestamptz,
    backup_access_code_id text,
    last_error text,
    decided_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backup_pulls_due ON backup_pulls (next_attempt_at) WHERE state IN ('decided', 'sending');
