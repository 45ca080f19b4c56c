-- Catch-up reads Seam's log window by window and moves the mark after each one; a
-- run may stop at its page cap with its progress saved ('partial'), to go on next run.
ALTER TABLE catch_up_state
    ADD COLUMN last_outcome text CHECK (last_outcome IN ('completed', 'partial', 'failed'));
UPDATE catch_up_state
    SET last_outcome = CASE WHEN last_error IS NOT NULL THEN 'failed' WHEN last_success_at IS NOT NULL THEN 'completed' END;

-- The settled sweep takes the longest-unfetched codes first, a few each run.
CREATE INDEX access_codes_fetched_at_idx ON access_codes (fetched_at) WHERE deleted_at IS NULL;
