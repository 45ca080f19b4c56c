-- The mirror: what Seam's last fetch said about each access code.
CREATE TABLE access_codes (
    access_code_id          text PRIMARY KEY,
    device_id               text,
    workspace_id            text,
    name                    text,
    -- 'ongoing' or 'time_bound'.
    type                    text,
    -- 'setting', 'set', 'unset', 'removing', 'unknown'; NULL only for a code that
    -- was deleted before any fetch could see it.
    status                  text,
    is_managed              boolean NOT NULL DEFAULT true,
    starts_at               timestamptz,
    ends_at                 timestamptz,
    warnings                jsonb NOT NULL DEFAULT '[]',
    errors                  jsonb NOT NULL DEFAULT '[]',
    -- The PIN, only when store_pins is on.
    code                    text,
    -- The whole fetched object, PIN redacted unless store_pins is on.
    access_code             jsonb,
    -- Set when Seam answers 404: the code no longer exists.
    deleted_at              timestamptz,
    last_event_id           text,
    last_event_type         text,
    last_event_occurred_at  timestamptz,
    -- When the fetch that produced this row was started; an older fetch never
    -- overwrites a newer one.
    fetched_at              timestamptz NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    -- When the row was last written (clock time, not transaction start).
    updated_at              timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX access_codes_device_idx ON access_codes (device_id);
CREATE INDEX access_codes_status_idx ON access_codes (status);
CREATE INDEX access_codes_updated_at_idx ON access_codes (updated_at);

-- One row each time a code's status, warnings or errors change, or it is deleted.
CREATE TABLE access_code_history (
    id                      bigserial PRIMARY KEY,
    access_code_id          text NOT NULL,
    -- 'created', 'changed' or 'deleted'.
    change                  text NOT NULL CHECK (change IN ('created', 'changed', 'deleted')),
    previous_status         text,
    status                  text,
    warnings                jsonb NOT NULL,
    errors                  jsonb NOT NULL,
    -- The event that led to the fetch.
    event_id                text,
    event_type              text,
    event_occurred_at       timestamptz,
    fetched_at              timestamptz NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX access_code_history_code_idx ON access_code_history (access_code_id, id);
