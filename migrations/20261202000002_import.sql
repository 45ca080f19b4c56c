-- Issue 13, part 1: the import. Every device's codes, read from Seam's lists into the
-- mirror, with its progress kept here so that a run cut short resumes where it stopped.

CREATE TABLE import_runs (
    id                          bigserial PRIMARY KEY,
    started_at                  timestamptz NOT NULL DEFAULT now(),
    -- Set once every device is done and codes of unlisted devices are queued.
    finished_at                 timestamptz,
    -- /devices/list: where the next page starts (NULL: at the first), whether every
    -- page was read, and when the listing began (codes fetched before it, on devices
    -- it did not name, are queued for a re-fetch).
    device_cursor               text,
    devices_listed              boolean NOT NULL DEFAULT false,
    devices_listing_started_at  timestamptz NOT NULL DEFAULT now(),
    -- Devices listed without the access_code capability (or unreadable).
    devices_skipped             integer NOT NULL DEFAULT 0,
    -- What the listed codes did to the mirror, over the devices done.
    codes_created               integer NOT NULL DEFAULT 0,
    codes_changed               integer NOT NULL DEFAULT 0,
    codes_unchanged             integer NOT NULL DEFAULT 0,
    codes_stale                 integer NOT NULL DEFAULT 0,
    -- Listed codes that could not be read or stored.
    codes_skipped               integer NOT NULL DEFAULT 0,
    -- Mirrored codes no list returned, queued for a re-fetch.
    codes_queued                integer NOT NULL DEFAULT 0,
    -- Seam calls behind the progress recorded here.
    seam_calls                  integer NOT NULL DEFAULT 0,
    last_error                  text,
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
-- At most one run is unfinished: it is resumed, never started twice.
CREATE UNIQUE INDEX import_runs_one_unfinished ON import_runs ((finished_at IS NULL)) WHERE finished_at IS NULL;

-- The devices a run listed (those that take access codes), each done once its
-- codes are in the mirror.
CREATE TABLE import_devices (
    run_id                  bigint NOT NULL REFERENCES import_runs (id) ON DELETE CASCADE,
    device_id               text NOT NULL,
    connected_account_id    text,
    workspace_id            text,
    listed_at               timestamptz NOT NULL DEFAULT now(),
    done_at                 timestamptz,
    -- Codes both lists returned for the device.
    codes_found             integer NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, device_id)
);
