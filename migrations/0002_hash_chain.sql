-- owner: event_store
-- The hash chain (eventstore/chain.py): every event's hash covers its content and the hash before it.
CREATE TABLE IF NOT EXISTS mm_event_index (
    position bigint PRIMARY KEY,      -- the event's notification id in stored_events
    org_id text NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    topic text NOT NULL,
    occurred_at timestamptz NOT NULL,
    hash bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS mm_event_index_org ON mm_event_index (org_id, position);
-- Indexes and chains every batch of inserted events, in position order, inside the inserting
-- statement (so nothing can write events without extending the chain). Writers hold the
-- recorder's table lock, so the chain has one writer at a time.
CREATE OR REPLACE FUNCTION mm_extend_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous bytea;
    event record;
    meta jsonb;
BEGIN
    SELECT hash INTO previous FROM mm_event_index ORDER BY position DESC LIMIT 1;
    previous := coalesce(previous, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    FOR event IN SELECT * FROM inserted ORDER BY notification_id LOOP
        meta := convert_from(event.state, 'UTF8')::jsonb -> 'meta';
        previous := sha256(previous || convert_to(format('%s|%s|%s|%s|', event.notification_id,
            event.originator_id, event.originator_version, event.topic), 'UTF8') || event.state);
        INSERT INTO mm_event_index (position, org_id, stream_id, version, topic, occurred_at, hash)
        VALUES (event.notification_id, meta ->> 'org_id', event.originator_id, event.originator_version,
                event.topic, (meta ->> 'occurred_at')::timestamptz, previous);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER mm_chain AFTER INSERT ON stored_events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION mm_extend_chain();
