-- The mirror's write of one fetched code takes two locks, in this order: the
-- transaction-scoped advisory lock on the link to the code as a backup (which
-- `link_backup` takes too, so an original and its backup written at once always
-- see each other's row), then the code's row. One call instead of two round trips;
-- the order is explicit here, where a single SQL statement would leave it to the
-- planner. Returns the row, if the code is mirrored.
CREATE FUNCTION lock_access_code_for_write(code_id text) RETURNS SETOF access_codes
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('backup_link:' || code_id, 0));
    RETURN QUERY SELECT * FROM access_codes WHERE access_code_id = code_id FOR UPDATE;
END
$$;
