-- owner: workspaces
CREATE TABLE IF NOT EXISTS rm_workspaces (
    workspace_id text PRIMARY KEY,
    org_id text NOT NULL,
    seq bigint NOT NULL,              -- position of the creating event: the keyset order
    deleted boolean NOT NULL,
    state bytea NOT NULL              -- JSON of WorkspaceState
);
CREATE INDEX IF NOT EXISTS rm_workspaces_org_seq ON rm_workspaces (org_id, seq) WHERE NOT deleted;
