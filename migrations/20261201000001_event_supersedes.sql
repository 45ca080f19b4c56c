-- The one rule for which of two events a code's queue row and mirror row name:
-- the newer by occurred_at, where an event without occurred_at is older than any
-- event with one, and a request without any event (a sweep, a manual re-fetch)
-- older still; on a tie the later arrival wins. The Rust twin is
-- `EventRef::supersedes`; a test checks that both agree.
CREATE FUNCTION event_supersedes(new_at timestamptz, new_id text, old_at timestamptz, old_id text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (COALESCE(new_at, '-infinity'::timestamptz), new_id IS NOT NULL)
    >= (COALESCE(old_at, '-infinity'::timestamptz), old_id IS NOT NULL);
