-- Issue 13: every code, and every change that touches it.

-- Events name the connected account (device and account events act on it).
ALTER TABLE seam_events ADD COLUMN connected_account_id text;
ALTER TABLE seam_events DROP CONSTRAINT seam_events_action_check;
ALTER TABLE seam_events ADD CONSTRAINT seam_events_action_check
    CHECK (action IN ('refetch', 'refetch_device', 'refetch_connected_account', 'ignored'));

ALTER TABLE access_code_refetches ADD COLUMN connected_account_id text;

-- First-class fields of Seam's access code (they stay in `access_code` too).
ALTER TABLE access_codes
    ADD COLUMN connected_account_id text,
    -- Seam's `created_at`: when the code was created in Seam.
    ADD COLUMN seam_created_at timestamptz,
    ADD COLUMN is_backup boolean,
    ADD COLUMN is_backup_access_code_available boolean,
    ADD COLUMN pulled_backup_access_code_id text,
    ADD COLUMN is_offline_access_code boolean,
    ADD COLUMN is_one_time_use boolean,
    ADD COLUMN is_waiting_for_code_assignment boolean,
    ADD COLUMN is_scheduled_on_device boolean,
    ADD COLUMN pending_mutations jsonb NOT NULL DEFAULT '[]';

-- Rows mirrored before: the same fields, read from the stored object.
UPDATE access_codes SET
    seam_created_at = CASE WHEN access_code->>'created_at' ~ '^\d{4}-\d\d-\d\dT'
                           THEN (access_code->>'created_at')::timestamptz END,
    is_backup = CASE WHEN jsonb_typeof(access_code->'is_backup') = 'boolean'
                     THEN (access_code->>'is_backup')::boolean END,
    is_backup_access_code_available = CASE WHEN jsonb_typeof(access_code->'is_backup_access_code_available') = 'boolean'
                                           THEN (access_code->>'is_backup_access_code_available')::boolean END,
    pulled_backup_access_code_id = access_code->>'pulled_backup_access_code_id',
    is_offline_access_code = CASE WHEN jsonb_typeof(access_code->'is_offline_access_code') = 'boolean'
                                  THEN (access_code->>'is_offline_access_code')::boolean END,
    is_one_time_use = CASE WHEN jsonb_typeof(access_code->'is_one_time_use') = 'boolean'
                           THEN (access_code->>'is_one_time_use')::boolean END,
    is_waiting_for_code_assignment = CASE WHEN jsonb_typeof(access_code->'is_waiting_for_code_assignment') = 'boolean'
                                          THEN (access_code->>'is_waiting_for_code_assignment')::boolean END,
    is_scheduled_on_device = CASE WHEN jsonb_typeof(access_code->'is_scheduled_on_device') = 'boolean'
                                  THEN (access_code->>'is_scheduled_on_device')::boolean END,
    pending_mutations = CASE WHEN jsonb_typeof(access_code->'pending_mutations') = 'array'
                             THEN access_code->'pending_mutations' ELSE '[]' END
WHERE access_code IS NOT NULL;

-- Device and account events re-fetch the codes of a device or of an account.
CREATE INDEX access_codes_connected_account_idx ON access_codes (connected_account_id);

-- What changed, in Seam's words (`status_changed`, `warnings_changed`,
-- `errors_changed`, `name_changed`, `time_frame_changed`, `code_changed`: never the
-- PIN itself), and where the observation came from: a fetch or the import.
ALTER TABLE access_code_history
    ADD COLUMN changes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN origin text NOT NULL DEFAULT 'fetch' CHECK (origin IN ('fetch', 'import'));
