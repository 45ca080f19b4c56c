-- Every Seam event the service has accepted, once: the durable record behind each 2xx.
CREATE TABLE seam_events (
    event_id        text PRIMARY KEY,
    -- svix-id / webhook-id of the delivery that brought it; a redelivery carries
    -- the same id and is a no-op.
    delivery_id     text UNIQUE,
    event_type      text NOT NULL,
    access_code_id  text,
    device_id       text,
    workspace_id    text,
    occurred_at     timestamptz,
    -- 'refetch' for access_code.* events, 'ignored' for every other family.
    action          text NOT NULL CHECK (action IN ('refetch', 'ignored')),
    -- The event as received, PIN redacted unless store_pins is on.
    payload         jsonb NOT NULL,
    -- When the delivery was stored (clock time, not transaction start).
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX seam_events_access_code_idx ON seam_events (access_code_id, occurred_at);
CREATE INDEX seam_events_received_at_idx ON seam_events (received_at);
