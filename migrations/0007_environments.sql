-- owner: environments
CREATE TABLE IF NOT EXISTS rm_environment_sets (
    stream_id text PRIMARY KEY,
    state bytea NOT NULL              -- JSON of Environments
);
CREATE TABLE IF NOT EXISTS rm_environments (
    environment_id text PRIMARY KEY,
    org_id text NOT NULL,
    workspace_id text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    state bytea NOT NULL              -- JSON of Environment
);
CREATE INDEX IF NOT EXISTS rm_environments_list ON rm_environments (workspace_id, seq) WHERE NOT deleted;
CREATE TABLE IF NOT EXISTS rm_deployments (
    deployment_id text PRIMARY KEY,
    org_id text NOT NULL,
    environment_id text NOT NULL,
    seq bigint NOT NULL,
    app_id text NOT NULL,
    release_id text,
    previous_release_id text,
    action text NOT NULL,
    deployed_by text NOT NULL,
    deployed_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rm_deployments_history ON rm_deployments (environment_id, seq DESC);
