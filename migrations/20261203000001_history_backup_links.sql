-- The backup relation as it stood at each change, so that a history row alone says
-- everything its change notification said (the change stream, GET /v1/changes,
-- sends one event per history row with the notification's JSON). NULL on rows
-- written before this migration.
ALTER TABLE access_code_history
    ADD COLUMN backup_access_code_id text,
    ADD COLUMN backup_of_access_code_id text;
