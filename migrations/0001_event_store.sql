-- owner: event_store
-- The event store. Its table, type, index and insert function are the `eventsourcing` library's
-- (`PostgresApplicationRecorder.create_table` with `originator_id_type="text"`, as eventsourcing 9.5 writes
-- them: the function's body is kept verbatim); `tests/test_migrations.py` checks them against the library's.
-- The primary key on (stream, version) is the optimistic concurrency, the notification id is the position.
CREATE TABLE IF NOT EXISTS "public"."stored_events" (
    originator_id "text" NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
DO $$ BEGIN
    CREATE TYPE "public"."stored_event_text" AS (originator_id "text", originator_version bigint, topic text, state bytea);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE UNIQUE INDEX IF NOT EXISTS "stored_events_notification_id_idx" ON "public"."stored_events" (notification_id ASC);
CREATE OR REPLACE FUNCTION "public"."es_insert_events_text"(events "public"."stored_event_text"[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$BEGIN    SET LOCAL lock_timeout = '0s';    NOTIFY "stored_events";    RETURN QUERY    INSERT INTO "public"."stored_events" AS t (    originator_id, originator_version, topic, state)    SELECT originator_id, originator_version, topic, state    FROM unnest(events)    RETURNING notification_id;END;$BODY$;
-- Ours (eventstore/postgres.py says why): uniqueness claims, the check of streams only read, the append.
CREATE TABLE IF NOT EXISTS mm_claims (
    scope text NOT NULL,
    key text NOT NULL,
    owner text NOT NULL,
    PRIMARY KEY (scope, key)
);
-- A decision read streams it did not write; they must not have moved by the time it commits. Raised
-- inside PostgreSQL so the transaction itself fails.
CREATE OR REPLACE FUNCTION mm_check_versions(ids text[], versions bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM unnest(ids, versions) AS expected(id, version)
        WHERE coalesce((SELECT max(originator_version) FROM stored_events s
                        WHERE s.originator_id = expected.id), 0) <> expected.version
    ) THEN
        RAISE EXCEPTION 'mm_stale_read: a stream read by this command has changed'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$$;
-- Everything an append does, under the lock the library's recorder takes (readers of the notification
-- log rely on it: positions become visible in order). The events' positions come back in input order.
CREATE OR REPLACE FUNCTION mm_append(
    ids text[], versions bigint[], topics text[], states bytea[], read_ids text[], read_versions bigint[],
    claim_scopes text[], claim_keys text[], claim_owners text[],
    release_scopes text[], release_keys text[], release_owners text[]
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    positions bigint[];
BEGIN
    LOCK TABLE stored_events IN EXCLUSIVE MODE;
    IF cardinality(read_ids) > 0 THEN
        PERFORM mm_check_versions(read_ids, read_versions);
    END IF;
    -- Most appends claim and release nothing: skipping the empty statements is a fifth of an append's cost.
    IF cardinality(release_scopes) > 0 THEN
        DELETE FROM mm_claims c USING unnest(release_scopes, release_keys, release_owners) AS r(scope, key, owner)
            WHERE c.scope = r.scope AND c.key = r.key AND c.owner = r.owner;
    END IF;
    IF cardinality(claim_scopes) > 0 THEN
        INSERT INTO mm_claims (scope, key, owner) SELECT * FROM unnest(claim_scopes, claim_keys, claim_owners);
    END IF;
    WITH inserted AS (
        INSERT INTO stored_events (originator_id, originator_version, topic, state)
        SELECT e.id, e.version, e.topic, e.state
        FROM unnest(ids, versions, topics, states) WITH ORDINALITY AS e(id, version, topic, state, n)
        ORDER BY e.n  -- positions are drawn in this order
        RETURNING notification_id
    )
    SELECT array_agg(notification_id ORDER BY notification_id) INTO positions FROM inserted;
    PERFORM pg_notify('stored_events', '');
    RETURN positions;
END
$$;
