-- Adds requests to their codes' pending re-fetches: enqueue_refetches (its
-- migration holds the rule), NOTIFYing $9 when it is not NULL and any was queued.
SELECT enqueue_refetches($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[], $8::timestamptz[], $10::text[], $9::text)
