-- owner: analytics
CREATE TABLE IF NOT EXISTS rm_analytics_items (
    stream_id text PRIMARY KEY,
    kind text NOT NULL,               -- catalog | action | run
    state bytea NOT NULL              -- catalog/action: its last state (to compute what an event changes);
                                      -- run: its workspace id, kept only while the run is open
);
CREATE TABLE IF NOT EXISTS rm_analytics_workspaces (
    workspace_id text PRIMARY KEY,
    org_id text NOT NULL,
    name text NOT NULL,
    deleted boolean NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rm_analytics_workspaces_org ON rm_analytics_workspaces (org_id) WHERE NOT deleted;
-- numeric, not bigint: a counter may sum what tenants enter (a source's tokens and bytes go up to 2^53
-- each), and a sum past bigint would fail every batch after it, for every org.
CREATE TABLE IF NOT EXISTS rm_analytics_counters (
    workspace_id text NOT NULL,
    key text NOT NULL,
    value numeric NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE TABLE IF NOT EXISTS rm_analytics_threads (
    workspace_id text NOT NULL,
    thread_id text NOT NULL,
    PRIMARY KEY (workspace_id, thread_id)
);
-- The threads runs of a namespace's actions started, once each (a view made before it counts runs from then on,
-- and a rebuild counts them all).
CREATE TABLE IF NOT EXISTS rm_analytics_namespace_threads (
    namespace_id text NOT NULL,
    thread_id text NOT NULL,
    PRIMARY KEY (namespace_id, thread_id)
);
CREATE TABLE IF NOT EXISTS rm_analytics_series (
    workspace_id text NOT NULL,
    period text NOT NULL,             -- hour | day
    bucket timestamptz NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (workspace_id, period, bucket)
);
