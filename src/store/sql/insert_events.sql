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
