-- owner: tokens
CREATE TABLE IF NOT EXISTS rm_tokens (
    token_id text PRIMARY KEY,
    org_id text NOT NULL,
    seq bigint NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    user_id text,
    principal_type text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS rm_tokens_org_seq ON rm_tokens (org_id, seq);
