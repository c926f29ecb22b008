-- owner: positions
-- Where each consumer of the log stands (pipeline/positions.py), and the store's settings.
CREATE TABLE IF NOT EXISTS mm_settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS mm_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Message ids are `<store id>:<position>`, so JetStream's de-duplication never confuses two stores.
INSERT INTO mm_settings (key, value) VALUES ('store_id', substr(md5(gen_random_uuid()::text), 1, 12))
    ON CONFLICT (key) DO NOTHING;
