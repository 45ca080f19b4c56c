-- The work queue: one row per access code that must be fetched again. Many events
-- for one code coalesce into its one row.
CREATE TABLE access_code_refetches (
    access_code_id          text PRIMARY KEY,
    -- 'managed' → /access_codes/get, 'unmanaged' → /access_codes/unmanaged/get.
    endpoint                text NOT NULL CHECK (endpoint IN ('managed', 'unmanaged')),
    device_id               text,
    workspace_id            text,
    -- Bumped by every request; a fetch completes only the requests it saw, so an
    -- event arriving mid-fetch causes exactly one more fetch.
    requests                bigint NOT NULL DEFAULT 1,
    -- The newest event (by occurred_at) among the pending requests.
    last_event_id           text,
    last_event_type         text,
    last_event_occurred_at  timestamptz,
    -- When the oldest request not yet served was received.
    first_requested_at      timestamptz NOT NULL DEFAULT now(),
    attempts                integer NOT NULL DEFAULT 0,
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    -- A lease: the worker holding claim_token may fetch until claimed_until.
    claim_token             uuid,
    claimed_until           timestamptz,
    last_error              text,
    dead_lettered_at        timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX access_code_refetches_due_idx
    ON access_code_refetches (next_attempt_at)
    WHERE dead_lettered_at IS NULL;
