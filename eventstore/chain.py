"""The tamper-evident hash chain over the event log.

Every event's hash covers its content and the hash of the event before it, so altering, removing or
reordering any stored event breaks the chain from that event on. A trigger on the PostgreSQL table
extends the chain inside every statement that inserts events, so nothing can write events around it;
`mechamental events verify` recomputes it (`projections.audit.verify`). The chain belongs to the
PostgreSQL store, where auditors read it; the in-memory store keeps none.
"""

from __future__ import annotations

import hashlib

GENESIS = b"\x00" * 32

INDEX_DDL = """
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
    previous := coalesce(previous, '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
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
"""


def event_hash(previous: bytes, position: int, stream_id: str, version: int, topic: str, state: bytes) -> bytes:
    digest = hashlib.sha256(previous)
    digest.update(f"{position}|{stream_id}|{version}|{topic}|".encode())
    digest.update(state)
    return digest.digest()
