WITH requested AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[], $8::timestamptz[], $10::text[])
        AS q(access_code_id, endpoint, device_id, workspace_id, requests,
             last_event_id, last_event_type, last_event_occurred_at, connected_account_id)
), upserted AS (
    INSERT INTO access_code_refetches AS r
        (access_code_id, endpoint, device_id, workspace_id, requests,
         last_event_id, last_event_type, last_event_occurred_at, connected_account_id)
    SELECT q.access_code_id,
           -- An event older than the newest one the mirror row has seen cannot switch
           -- the endpoint (a late access_code.unmanaged.* event after the conversion
           -- to managed): the row's own endpoint stands.
           CASE WHEN a.access_code_id IS NOT NULL
                     AND NOT event_supersedes(q.last_event_occurred_at, q.last_event_id,
                                              a.last_event_occurred_at, a.last_event_id)
                THEN CASE WHEN a.is_managed THEN 'managed' ELSE 'unmanaged' END
                ELSE q.endpoint END,
           q.device_id, q.workspace_id, q.requests,
           q.last_event_id, q.last_event_type, q.last_event_occurred_at, q.connected_account_id
    FROM requested q LEFT JOIN access_codes a ON a.access_code_id = q.access_code_id
    ON CONFLICT (access_code_id) DO UPDATE SET
        requests = r.requests + EXCLUDED.requests,
        -- The newest event decides the endpoint and the event the mirror names
        -- (event_supersedes: the one rule, shared with the mirror).
        endpoint = CASE WHEN event_supersedes(EXCLUDED.last_event_occurred_at, EXCLUDED.last_event_id,
                                              r.last_event_occurred_at, r.last_event_id)
                        THEN EXCLUDED.endpoint ELSE r.endpoint END,
        last_event_id = CASE WHEN event_supersedes(EXCLUDED.last_event_occurred_at, EXCLUDED.last_event_id,
                                                   r.last_event_occurred_at, r.last_event_id)
                        THEN EXCLUDED.last_event_id ELSE r.last_event_id END,
        last_event_type = CASE WHEN event_supersedes(EXCLUDED.last_event_occurred_at, EXCLUDED.last_event_id,
                                                     r.last_event_occurred_at, r.last_event_id)
                        THEN EXCLUDED.last_event_type ELSE r.last_event_type END,
        last_event_occurred_at = CASE WHEN event_supersedes(EXCLUDED.last_event_occurred_at,
                                          EXCLUDED.last_event_id, r.last_event_occurred_at, r.last_event_id)
                        THEN EXCLUDED.last_event_occurred_at ELSE r.last_event_occurred_at END,
        device_id = COALESCE(EXCLUDED.device_id, r.device_id),
        workspace_id = COALESCE(EXCLUDED.workspace_id, r.workspace_id),
        connected_account_id = COALESCE(EXCLUDED.connected_account_id, r.connected_account_id),
        -- A new request revives a dead letter.
        attempts = CASE WHEN r.dead_lettered_at IS NULL THEN r.attempts ELSE 0 END,
        next_attempt_at = CASE WHEN r.dead_lettered_at IS NULL THEN r.next_attempt_at ELSE now() END,
        first_requested_at = CASE WHEN r.dead_lettered_at IS NULL THEN r.first_requested_at ELSE now() END,
        dead_lettered_at = NULL,
        updated_at = now()
    RETURNING 1
)
-- $9 NULL: no NOTIFY here (the intake announces its work after the commit, see
-- queue::RefetchNotifier).
SELECT pg_notify($9, '') FROM (SELECT 1 FROM upserted LIMIT 1) any_upserted WHERE $9::text IS NOT NULL
