-- A batch of verified events and the re-fetches the new ones ask for, in one
-- statement: one round trip and one commit, all or nothing. Arrays, one element
-- per event, in event_id order (rows are inserted in that order, so concurrent
-- batches cannot deadlock); $11 is each event's place in arrival order.
-- Returns the ids of the events not stored before, and how many codes it queued.
WITH inserted AS (
    INSERT INTO seam_events
        (event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
         occurred_at, action, payload, connected_account_id)
    SELECT event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
           occurred_at, action, payload::jsonb, connected_account_id
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::timestamptz[], $8::text[], $9::text[], $10::text[])
         AS e(event_id, delivery_id, event_type, access_code_id, device_id, workspace_id,
              occurred_at, action, payload, connected_account_id)
    ON CONFLICT DO NOTHING
    RETURNING event_id
), new_events AS (
    -- Each new event once: the first of its copies to arrive.
    SELECT DISTINCT ON (e.event_id) e.*
    FROM UNNEST($1::text[], $11::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                $10::text[], $7::timestamptz[], $12::text[], $13::text[], $14::text[], $15::text[])
         AS e(event_id, arrival, event_type, access_code_id, device_id, workspace_id,
              connected_account_id, occurred_at, endpoint, backup_access_code_id,
              refetch_device_id, refetch_connected_account_id)
    WHERE e.event_id IN (SELECT event_id FROM inserted)
    ORDER BY e.event_id, e.arrival
), asked AS (
    -- A code event asks for its code, from its endpoint ...
    SELECT arrival AS asked_order, access_code_id, endpoint, device_id, workspace_id,
           connected_account_id, event_id, event_type, occurred_at
    FROM new_events WHERE endpoint IS NOT NULL AND access_code_id IS NOT NULL
    UNION ALL
    -- ... and `backup_access_code_pulled` for the backup it names too ...
    SELECT arrival, backup_access_code_id, 'managed', device_id, workspace_id,
           connected_account_id, event_id, event_type, occurred_at
    FROM new_events WHERE endpoint IS NOT NULL AND backup_access_code_id IS NOT NULL
    UNION ALL
    -- ... and a device or account event for each mirrored, not deleted code of its
    -- device or account, as the mirror knows it (after the code events, in order).
    SELECT cardinality($1::text[]) + e.arrival, a.access_code_id,
           CASE WHEN a.is_managed THEN 'managed' ELSE 'unmanaged' END,
           a.device_id, a.workspace_id, a.connected_account_id, e.event_id, e.event_type, e.occurred_at
    FROM new_events e
    CROSS JOIN LATERAL (
        SELECT * FROM access_codes WHERE device_id = e.refetch_device_id AND deleted_at IS NULL
        UNION ALL
        SELECT * FROM access_codes
        WHERE connected_account_id = e.refetch_connected_account_id AND deleted_at IS NULL
    ) a
    WHERE e.refetch_device_id IS NOT NULL OR e.refetch_connected_account_id IS NOT NULL
), merged AS (
    -- One request per code: how many events ask for it, the newest of them (by
    -- event_supersedes's order: occurred_at, a missing one oldest; on a tie the
    -- later), and the last device, workspace and account named.
    SELECT access_code_id,
           count(*) AS requests,
           (array_agg(endpoint ORDER BY COALESCE(occurred_at, '-infinity') DESC, asked_order DESC))[1] AS endpoint,
           (array_agg(event_id ORDER BY COALESCE(occurred_at, '-infinity') DESC, asked_order DESC))[1] AS event_id,
           (array_agg(event_type ORDER BY COALESCE(occurred_at, '-infinity') DESC, asked_order DESC))[1] AS event_type,
           (array_agg(occurred_at ORDER BY COALESCE(occurred_at, '-infinity') DESC, asked_order DESC))[1] AS occurred_at,
           (array_agg(device_id ORDER BY asked_order DESC) FILTER (WHERE device_id IS NOT NULL))[1] AS device_id,
           (array_agg(workspace_id ORDER BY asked_order DESC) FILTER (WHERE workspace_id IS NOT NULL))[1] AS workspace_id,
           (array_agg(connected_account_id ORDER BY asked_order DESC)
               FILTER (WHERE connected_account_id IS NOT NULL))[1] AS connected_account_id
    FROM asked
    GROUP BY access_code_id
)
SELECT ARRAY(SELECT event_id FROM inserted) AS "inserted!",
       enqueue_refetches(
           array_agg(access_code_id ORDER BY access_code_id), array_agg(endpoint ORDER BY access_code_id),
           array_agg(device_id ORDER BY access_code_id), array_agg(workspace_id ORDER BY access_code_id),
           array_agg(requests ORDER BY access_code_id), array_agg(event_id ORDER BY access_code_id),
           array_agg(event_type ORDER BY access_code_id), array_agg(occurred_at ORDER BY access_code_id),
           array_agg(connected_account_id ORDER BY access_code_id), $16::text
       ) AS "queued!"
FROM merged
