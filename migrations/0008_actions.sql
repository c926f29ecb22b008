-- owner: actions
CREATE TABLE IF NOT EXISTS rm_actions (
    action_id text PRIMARY KEY,
    org_id text NOT NULL,
    workspace_id text NOT NULL,
    app_id text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    search_text text NOT NULL,        -- lower-cased name and description
    next_run_at timestamptz,          -- the scheduler's work list
    state bytea NOT NULL,             -- JSON of ActionState
    total_runs integer NOT NULL DEFAULT 0,
    successful_runs integer NOT NULL DEFAULT 0,
    failed_runs integer NOT NULL DEFAULT 0,
    last_run_at timestamptz,
    last_run_status text,
    last_execution_id text,
    running_runs integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS rm_actions_list ON rm_actions (app_id, seq) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS rm_actions_due ON rm_actions (next_run_at) WHERE NOT deleted AND next_run_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS rm_runs (
    run_id text PRIMARY KEY,
    org_id text NOT NULL,
    action_id text NOT NULL,
    seq bigint NOT NULL,
    status text NOT NULL,
    due_at timestamptz NOT NULL,
    lease_until timestamptz,
    state bytea NOT NULL              -- JSON of RunState
);
CREATE INDEX IF NOT EXISTS rm_runs_history ON rm_runs (action_id, seq DESC);
CREATE INDEX IF NOT EXISTS rm_runs_work ON rm_runs (due_at) WHERE status IN ('pending', 'running');
