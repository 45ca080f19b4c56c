-- Adds requests to their codes' pending re-fetches ($1-$8, $10: arrays, one element
-- per code, at most one per code, in access_code_id order), NOTIFYing $9 when it is
-- not NULL and any was queued; and, in the same statement, stores the events that
-- asked for them ($11-$20: arrays, one element per event, in event_id order; empty
-- when the caller stores no events with them). A batch of the intake is then one
-- round trip and one commit (store::intake).
--
-- Such events go in all together and all new, or not at all: one stored before (or
-- by a concurrent statement meanwhile) fails the INSERT with a unique violation, and
-- the caller stores the batch in a transaction that sorts out which are new.
WITH inserted AS (
    INSERT INTO seam_events
        (event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
         occurred_at, action, payload, connected_account_id)
    SELECT event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
           occurred_at, action, payload::jsonb, connected_account_id
    FROM UNNEST($11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                $17::timestamptz[], $18::text[], $19::text[], $20::text[])
         AS e(event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
              occurred_at, action, payload, connected_account_id)
    RETURNING 1
), requested AS (
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
SELECT (SELECT count(*) FROM inserted) AS "inserted!",
       (SELECT count(*) FROM (SELECT pg_notify($9, '') FROM (SELECT 1 FROM upserted LIMIT 1) any_upserted
                             WHERE $9::text IS NOT NULL) notified) AS "notified!"
