-- Issue 14: catch-up and the import run per workspace, each with its own state.
--
-- A workspace's rows are keyed by `workspace_key`: its workspace id, or '' for the
-- single-key setup while Seam has not said which workspace the key reaches. The rows
-- from before (one catch-up state, the import runs, made with the first credential)
-- become '' rows: the first configured workspace takes them over once its id is known,
-- so an upgraded deployment keeps its catch-up mark and its import's progress. ('' is
-- also the columns' default.)

ALTER TABLE catch_up_state ADD COLUMN workspace_key text NOT NULL DEFAULT '';
-- The workspace's name as configured (or where its credential came from), for `status`.
ALTER TABLE catch_up_state ADD COLUMN workspace_label text;
ALTER TABLE catch_up_state DROP CONSTRAINT catch_up_state_pkey;
-- Its CHECK (id = 1) goes with it.
ALTER TABLE catch_up_state DROP COLUMN id;
ALTER TABLE catch_up_state ADD PRIMARY KEY (workspace_key);

ALTER TABLE import_runs ADD COLUMN workspace_key text NOT NULL DEFAULT '';
ALTER TABLE import_runs ADD COLUMN workspace_label text;
-- At most one unfinished run per workspace.
DROP INDEX import_runs_one_unfinished;
CREATE UNIQUE INDEX import_runs_one_unfinished ON import_runs (workspace_key) WHERE finished_at IS NULL;
CREATE INDEX import_runs_workspace_idx ON import_runs (workspace_key, id);

-- The import asks which workspaces' mirrors hold codes.
CREATE INDEX access_codes_workspace_idx ON access_codes (workspace_id);
