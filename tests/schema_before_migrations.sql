-- The schema (and its two rows) that `mechamental migrate` made before migration steps (commit bec8262):
-- pg_dump --no-owner --no-privileges --inserts of a fresh database it migrated, psql meta-commands removed.
-- tests/test_migrations.py restores it as "a database made by the old code".
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: stored_event_text; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.stored_event_text AS (
	originator_id text,
	originator_version bigint,
	topic text,
	state bytea
);


--
-- Name: es_insert_events_text(public.stored_event_text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.es_insert_events_text(events public.stored_event_text[]) RETURNS SETOF bigint
    LANGUAGE plpgsql
    AS $$BEGIN    SET LOCAL lock_timeout = '0s';    NOTIFY "stored_events";    RETURN QUERY    INSERT INTO "public"."stored_events" AS t (    originator_id, originator_version, topic, state)    SELECT originator_id, originator_version, topic, state    FROM unnest(events)    RETURNING notification_id;END;$$;


--
-- Name: mm_append(text[], bigint[], text[], bytea[], text[], bigint[], text[], text[], text[], text[], text[], text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mm_append(ids text[], versions bigint[], topics text[], states bytea[], read_ids text[], read_versions bigint[], claim_scopes text[], claim_keys text[], claim_owners text[], release_scopes text[], release_keys text[], release_owners text[]) RETURNS bigint[]
    LANGUAGE plpgsql
    AS $$
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


--
-- Name: mm_check_versions(text[], bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mm_check_versions(ids text[], versions bigint[]) RETURNS void
    LANGUAGE plpgsql
    AS $$
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


--
-- Name: mm_extend_chain(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mm_extend_chain() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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


SET default_tablespace = '';

--
-- Name: activity; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.activity (
    id text NOT NULL,
    org_id text NOT NULL,
    ts timestamp with time zone NOT NULL,
    workspace_id text,
    app_id text,
    user_id text,
    action text NOT NULL,
    resource_type text,
    resource_id text,
    augmentation_id text,
    success boolean NOT NULL,
    duration_ms double precision NOT NULL,
    record bytea NOT NULL
)
PARTITION BY RANGE (ts);


SET default_table_access_method = heap;

--
-- Name: activity_hourly; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.activity_hourly (
    org_id text NOT NULL,
    scope text NOT NULL,
    scope_id text NOT NULL,
    hour timestamp with time zone NOT NULL,
    action text NOT NULL,
    resource_type text NOT NULL,
    requests bigint NOT NULL,
    successes bigint NOT NULL,
    duration_ms double precision NOT NULL,
    tokens bigint NOT NULL
);


--
-- Name: activity_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.activity_migrations (
    name text NOT NULL
);


--
-- Name: mm_claims; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mm_claims (
    scope text NOT NULL,
    key text NOT NULL,
    owner text NOT NULL
);


--
-- Name: mm_event_index; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mm_event_index (
    "position" bigint NOT NULL,
    org_id text NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    topic text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    hash bytea NOT NULL
);


--
-- Name: mm_positions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mm_positions (
    name text NOT NULL,
    "position" bigint DEFAULT 0 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: mm_settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mm_settings (
    key text NOT NULL,
    value text NOT NULL
);


--
-- Name: rm_actions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_actions (
    action_id text NOT NULL,
    org_id text NOT NULL,
    workspace_id text NOT NULL,
    app_id text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    search_text text NOT NULL,
    next_run_at timestamp with time zone,
    state bytea NOT NULL,
    total_runs integer DEFAULT 0 NOT NULL,
    successful_runs integer DEFAULT 0 NOT NULL,
    failed_runs integer DEFAULT 0 NOT NULL,
    last_run_at timestamp with time zone,
    last_run_status text,
    last_execution_id text,
    running_runs integer DEFAULT 0 NOT NULL
);


--
-- Name: rm_analytics_counters; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_analytics_counters (
    workspace_id text NOT NULL,
    key text NOT NULL,
    value numeric NOT NULL
);


--
-- Name: rm_analytics_items; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_analytics_items (
    stream_id text NOT NULL,
    kind text NOT NULL,
    state bytea NOT NULL
);


--
-- Name: rm_analytics_namespace_threads; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_analytics_namespace_threads (
    namespace_id text NOT NULL,
    thread_id text NOT NULL
);


--
-- Name: rm_analytics_series; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_analytics_series (
    workspace_id text NOT NULL,
    period text NOT NULL,
    bucket timestamp with time zone NOT NULL,
    value bigint NOT NULL
);


--
-- Name: rm_analytics_threads; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_analytics_threads (
    workspace_id text NOT NULL,
    thread_id text NOT NULL
);


--
-- Name: rm_analytics_workspaces; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_analytics_workspaces (
    workspace_id text NOT NULL,
    org_id text NOT NULL,
    name text NOT NULL,
    deleted boolean NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: rm_catalog; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_catalog (
    item_id text NOT NULL,
    org_id text NOT NULL,
    workspace_id text NOT NULL,
    kind text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    state bytea NOT NULL
);


--
-- Name: rm_deployments; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_deployments (
    deployment_id text NOT NULL,
    org_id text NOT NULL,
    environment_id text NOT NULL,
    seq bigint NOT NULL,
    app_id text NOT NULL,
    release_id text,
    previous_release_id text,
    action text NOT NULL,
    deployed_by text NOT NULL,
    deployed_at timestamp with time zone NOT NULL
);


--
-- Name: rm_environment_sets; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_environment_sets (
    stream_id text NOT NULL,
    state bytea NOT NULL
);


--
-- Name: rm_environments; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_environments (
    environment_id text NOT NULL,
    org_id text NOT NULL,
    workspace_id text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    state bytea NOT NULL
);


--
-- Name: rm_runs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_runs (
    run_id text NOT NULL,
    org_id text NOT NULL,
    action_id text NOT NULL,
    seq bigint NOT NULL,
    status text NOT NULL,
    due_at timestamp with time zone NOT NULL,
    lease_until timestamp with time zone,
    state bytea NOT NULL
);


--
-- Name: rm_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_tokens (
    token_id text NOT NULL,
    org_id text NOT NULL,
    seq bigint NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    user_id text,
    principal_type text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    created_by text NOT NULL,
    revoked_at timestamp with time zone
);


--
-- Name: rm_workspaces; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rm_workspaces (
    workspace_id text NOT NULL,
    org_id text NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL,
    state bytea NOT NULL
);


--
-- Name: stored_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.stored_events (
    originator_id text NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigint NOT NULL
)
WITH (autovacuum_enabled='true', autovacuum_vacuum_threshold='100000000', autovacuum_vacuum_scale_factor='0.5', autovacuum_analyze_threshold='1000', autovacuum_analyze_scale_factor='0.01');


--
-- Name: stored_events_notification_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.stored_events_notification_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: stored_events_notification_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.stored_events_notification_id_seq OWNED BY public.stored_events.notification_id;


--
-- Name: stored_events notification_id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.stored_events ALTER COLUMN notification_id SET DEFAULT nextval('public.stored_events_notification_id_seq'::regclass);


--
-- Data for Name: activity_hourly; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: activity_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.activity_migrations VALUES ('six-verbs');


--
-- Data for Name: mm_claims; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: mm_event_index; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: mm_positions; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: mm_settings; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.mm_settings VALUES ('store_id', 'ee535feba1d2');


--
-- Data for Name: rm_actions; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_analytics_counters; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_analytics_items; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_analytics_namespace_threads; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_analytics_series; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_analytics_threads; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_analytics_workspaces; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_catalog; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_deployments; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_environment_sets; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_environments; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_runs; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_tokens; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rm_workspaces; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: stored_events; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Name: stored_events_notification_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.stored_events_notification_id_seq', 1, false);


--
-- Name: activity_hourly activity_hourly_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.activity_hourly
    ADD CONSTRAINT activity_hourly_pkey PRIMARY KEY (org_id, scope, scope_id, hour, action, resource_type);


--
-- Name: activity_migrations activity_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.activity_migrations
    ADD CONSTRAINT activity_migrations_pkey PRIMARY KEY (name);


--
-- Name: activity activity_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.activity
    ADD CONSTRAINT activity_pkey PRIMARY KEY (id, ts);


--
-- Name: mm_claims mm_claims_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mm_claims
    ADD CONSTRAINT mm_claims_pkey PRIMARY KEY (scope, key);


--
-- Name: mm_event_index mm_event_index_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mm_event_index
    ADD CONSTRAINT mm_event_index_pkey PRIMARY KEY ("position");


--
-- Name: mm_positions mm_positions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mm_positions
    ADD CONSTRAINT mm_positions_pkey PRIMARY KEY (name);


--
-- Name: mm_settings mm_settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mm_settings
    ADD CONSTRAINT mm_settings_pkey PRIMARY KEY (key);


--
-- Name: rm_actions rm_actions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_actions
    ADD CONSTRAINT rm_actions_pkey PRIMARY KEY (action_id);


--
-- Name: rm_analytics_counters rm_analytics_counters_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_analytics_counters
    ADD CONSTRAINT rm_analytics_counters_pkey PRIMARY KEY (workspace_id, key);


--
-- Name: rm_analytics_items rm_analytics_items_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_analytics_items
    ADD CONSTRAINT rm_analytics_items_pkey PRIMARY KEY (stream_id);


--
-- Name: rm_analytics_namespace_threads rm_analytics_namespace_threads_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_analytics_namespace_threads
    ADD CONSTRAINT rm_analytics_namespace_threads_pkey PRIMARY KEY (namespace_id, thread_id);


--
-- Name: rm_analytics_series rm_analytics_series_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_analytics_series
    ADD CONSTRAINT rm_analytics_series_pkey PRIMARY KEY (workspace_id, period, bucket);


--
-- Name: rm_analytics_threads rm_analytics_threads_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_analytics_threads
    ADD CONSTRAINT rm_analytics_threads_pkey PRIMARY KEY (workspace_id, thread_id);


--
-- Name: rm_analytics_workspaces rm_analytics_workspaces_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_analytics_workspaces
    ADD CONSTRAINT rm_analytics_workspaces_pkey PRIMARY KEY (workspace_id);


--
-- Name: rm_catalog rm_catalog_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_catalog
    ADD CONSTRAINT rm_catalog_pkey PRIMARY KEY (item_id);


--
-- Name: rm_deployments rm_deployments_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_deployments
    ADD CONSTRAINT rm_deployments_pkey PRIMARY KEY (deployment_id);


--
-- Name: rm_environment_sets rm_environment_sets_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_environment_sets
    ADD CONSTRAINT rm_environment_sets_pkey PRIMARY KEY (stream_id);


--
-- Name: rm_environments rm_environments_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_environments
    ADD CONSTRAINT rm_environments_pkey PRIMARY KEY (environment_id);


--
-- Name: rm_runs rm_runs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_runs
    ADD CONSTRAINT rm_runs_pkey PRIMARY KEY (run_id);


--
-- Name: rm_tokens rm_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_tokens
    ADD CONSTRAINT rm_tokens_pkey PRIMARY KEY (token_id);


--
-- Name: rm_workspaces rm_workspaces_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rm_workspaces
    ADD CONSTRAINT rm_workspaces_pkey PRIMARY KEY (workspace_id);


--
-- Name: stored_events stored_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.stored_events
    ADD CONSTRAINT stored_events_pkey PRIMARY KEY (originator_id, originator_version);


--
-- Name: activity_app_set; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_app_set ON ONLY public.activity USING btree (org_id, app_id, ts DESC, id DESC) WHERE (app_id IS NOT NULL);


--
-- Name: activity_augmentation; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_augmentation ON ONLY public.activity USING btree (org_id, augmentation_id, ts DESC, id DESC) WHERE (augmentation_id IS NOT NULL);


--
-- Name: activity_org; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_org ON ONLY public.activity USING btree (org_id, ts DESC, id DESC);


--
-- Name: activity_resource; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_resource ON ONLY public.activity USING btree (org_id, resource_id, ts DESC, id DESC);


--
-- Name: activity_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_user ON ONLY public.activity USING btree (org_id, user_id, ts DESC, id DESC);


--
-- Name: activity_verb; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_verb ON ONLY public.activity USING btree (org_id, workspace_id, action, ts DESC, id DESC);


--
-- Name: activity_workspace; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX activity_workspace ON ONLY public.activity USING btree (org_id, workspace_id, ts DESC, id DESC);


--
-- Name: mm_event_index_org; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX mm_event_index_org ON public.mm_event_index USING btree (org_id, "position");


--
-- Name: rm_actions_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_actions_due ON public.rm_actions USING btree (next_run_at) WHERE ((NOT deleted) AND (next_run_at IS NOT NULL));


--
-- Name: rm_actions_list; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_actions_list ON public.rm_actions USING btree (app_id, seq) WHERE (NOT deleted);


--
-- Name: rm_analytics_workspaces_org; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_analytics_workspaces_org ON public.rm_analytics_workspaces USING btree (org_id) WHERE (NOT deleted);


--
-- Name: rm_catalog_list; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_catalog_list ON public.rm_catalog USING btree (workspace_id, kind, seq) WHERE (NOT deleted);


--
-- Name: rm_deployments_history; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_deployments_history ON public.rm_deployments USING btree (environment_id, seq DESC);


--
-- Name: rm_environments_list; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_environments_list ON public.rm_environments USING btree (workspace_id, seq) WHERE (NOT deleted);


--
-- Name: rm_runs_history; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_runs_history ON public.rm_runs USING btree (action_id, seq DESC);


--
-- Name: rm_runs_work; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_runs_work ON public.rm_runs USING btree (due_at) WHERE (status = ANY (ARRAY['pending'::text, 'running'::text]));


--
-- Name: rm_tokens_org_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_tokens_org_seq ON public.rm_tokens USING btree (org_id, seq);


--
-- Name: rm_workspaces_org_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rm_workspaces_org_seq ON public.rm_workspaces USING btree (org_id, seq) WHERE (NOT deleted);


--
-- Name: stored_events_notification_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX stored_events_notification_id_idx ON public.stored_events USING btree (notification_id);


--
-- Name: stored_events mm_chain; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER mm_chain AFTER INSERT ON public.stored_events REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION public.mm_extend_chain();


--
-- PostgreSQL database dump complete
--


