-- owner: activity
CREATE TABLE IF NOT EXISTS activity (
    id text NOT NULL,
    org_id text NOT NULL,
    ts timestamptz NOT NULL,
    workspace_id text,
    app_id text,
    user_id text,
    action text NOT NULL,
    resource_type text,
    resource_id text,
    augmentation_id text,
    success boolean NOT NULL,
    duration_ms double precision NOT NULL,
    record bytea NOT NULL,            -- JSON of ActivityRecord
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS activity_org ON activity (org_id, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS activity_workspace ON activity (org_id, workspace_id, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS activity_user ON activity (org_id, user_id, ts DESC, id DESC);
-- Most records (requests outside /apps) have no app: their index entries would never be read.
CREATE INDEX IF NOT EXISTS activity_app_set ON activity (org_id, app_id, ts DESC, id DESC) WHERE app_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS activity_resource ON activity (org_id, resource_id, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS activity_augmentation ON activity (org_id, augmentation_id, ts DESC, id DESC)
    WHERE augmentation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS activity_verb ON activity (org_id, workspace_id, action, ts DESC, id DESC);
CREATE TABLE IF NOT EXISTS activity_hourly (
    org_id text NOT NULL,
    scope text NOT NULL,              -- org | workspace | user | endpoint
    scope_id text NOT NULL,
    hour timestamptz NOT NULL,
    action text NOT NULL,
    resource_type text NOT NULL,
    requests bigint NOT NULL,
    successes bigint NOT NULL,
    duration_ms double precision NOT NULL,
    tokens bigint NOT NULL,
    PRIMARY KEY (org_id, scope, scope_id, hour, action, resource_type)
);
