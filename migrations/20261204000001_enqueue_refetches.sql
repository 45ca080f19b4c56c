-- The re-fetch queue's upsert as one function, so that every statement that queues
-- work runs the same rule: `enqueue.sql` (catch-up, sweeps, the CLI) and the
-- intake's one statement per batch (`intake_batch.sql`). Arrays, one element per
-- code, at most one per code, in access_code_id order (rows are locked in that
-- order, so concurrent batches cannot deadlock). Returns how many codes it queued;
-- with `notify_channel`, NOTIFYs it once when that is any.
CREATE FUNCTION enqueue_refetches(
    codes text[], endpoints text[], devices text[], workspaces text[], counts bigint[],
    event_ids text[], event_types text[], occurred timestamptz[], accounts text[],
    notify_channel text
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    queued bigint;
BEGIN
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
    FROM UNNEST(codes, endpoints, devices, workspaces, counts, event_ids, event_types, occurred, accounts)
        AS q(access_code_id, endpoint, device_id, workspace_id, requests,
             last_event_id, last_event_type, last_event_occurred_at, connected_account_id)
    LEFT JOIN access_codes a ON a.access_code_id = q.access_code_id
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
        updated_at = now();
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 AND notify_channel IS NOT NULL THEN
        PERFORM pg_notify(notify_channel, '');
    END IF;
    RETURN queued;
END
$$;
