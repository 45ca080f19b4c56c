-- The SQL seam-access-sync runs per accepted delivery (src/intake.rs + src/queue.rs
-- enqueue), one transaction each: the yardstick for intake throughput.
\set code random(1, 1000)
\set n random(1, 1000000000)
BEGIN;
INSERT INTO seam_events
    (event_id, delivery_id, event_type, access_code_id, device_id, workspace_id, occurred_at, action, payload)
VALUES (gen_random_uuid()::text, 'msg_pgbench_' || :client_id || '_' || :n || '_' || random(), 'access_code.set_on_device',
        'ac_' || :code, 'device_bench', 'ws_bench', now(), 'refetch',
        '{"event_id":"8d9c5c56-6a38-4d3b-9c1e-4b1f0f2f9a11","event_type":"access_code.set_on_device","workspace_id":"0f4a4a4e-2a0b-4d8e-9d6c-2a6f1b9c3d10","device_id":"6f0e3c2a-1b7d-4e59-8a3f-9c2d1e0b4a77","connected_account_id":"c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f","access_code_id":"ac_bench","created_at":"2026-11-26T00:00:00.000Z","occurred_at":"2026-11-26T00:00:00.000Z","event_description":"The access code was set on the device.","code":"[redacted]","device_custom_metadata":{"unit":"4B","property":"Harbour View"},"connected_account_custom_metadata":{}}')
ON CONFLICT DO NOTHING;
WITH upserted AS (
    INSERT INTO access_code_refetches AS r
        (access_code_id, endpoint, device_id, workspace_id, last_event_id, last_event_type, last_event_occurred_at)
    VALUES ('ac_' || :code, 'managed', 'device_bench', 'ws_bench', 'ev', 'access_code.set_on_device', now())
    ON CONFLICT (access_code_id) DO UPDATE SET
        requests = r.requests + 1,
        endpoint = CASE WHEN r.last_event_occurred_at > EXCLUDED.last_event_occurred_at THEN r.endpoint ELSE EXCLUDED.endpoint END,
        last_event_id = CASE WHEN r.last_event_occurred_at > EXCLUDED.last_event_occurred_at THEN r.last_event_id ELSE EXCLUDED.last_event_id END,
        last_event_type = CASE WHEN r.last_event_occurred_at > EXCLUDED.last_event_occurred_at THEN r.last_event_type ELSE EXCLUDED.last_event_type END,
        last_event_occurred_at = GREATEST(r.last_event_occurred_at, EXCLUDED.last_event_occurred_at),
        device_id = COALESCE(EXCLUDED.device_id, r.device_id),
        workspace_id = COALESCE(EXCLUDED.workspace_id, r.workspace_id),
        attempts = CASE WHEN r.dead_lettered_at IS NULL THEN r.attempts ELSE 0 END,
        next_attempt_at = CASE WHEN r.dead_lettered_at IS NULL THEN r.next_attempt_at ELSE now() END,
        first_requested_at = CASE WHEN r.dead_lettered_at IS NULL THEN r.first_requested_at ELSE now() END,
        dead_lettered_at = NULL,
        updated_at = now()
    RETURNING 1
)
SELECT pg_notify('seam_access_sync_refetch', '') FROM upserted;
COMMIT;
