-- owner: catalog
CREATE TABLE IF NOT EXISTS rm_catalog (
    item_id text PRIMARY KEY,
    org_id text NOT NULL,
    workspace_id text NOT NULL,
    kind text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    state bytea NOT NULL              -- JSON of CatalogItem
);
CREATE INDEX IF NOT EXISTS rm_catalog_list ON rm_catalog (workspace_id, kind, seq) WHERE NOT deleted;
