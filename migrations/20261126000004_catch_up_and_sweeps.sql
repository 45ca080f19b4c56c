-- Catch-up from Seam's /events/list: one row, shared by every replica.
CREATE TABLE catch_up_state (
    id                  integer PRIMARY KEY CHECK (id = 1),
    -- created_at of the newest event seen in Seam's event log.
    high_water_mark     timestamptz,
    last_run_at         timestamptz,
    last_success_at     timestamptz,
    last_events_found   integer NOT NULL DEFAULT 0,
    last_events_new     integer NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
INSERT INTO catch_up_state (id) VALUES (1);

-- When the code's status last changed: sweeps back off on codes stuck for long.
ALTER TABLE access_codes ADD COLUMN status_changed_at timestamptz;
UPDATE access_codes SET status_changed_at = fetched_at;
CREATE INDEX access_codes_sweep_idx ON access_codes (status, fetched_at) WHERE deleted_at IS NULL;
