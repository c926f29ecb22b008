"""`mechamental migrate` applies numbered steps once each, adopts databases made before them, and makes the
schema the DDL modules made before the steps existed."""

from __future__ import annotations

import concurrent.futures
import pathlib

import psycopg
import pytest

import migrations
from tests.conftest import scratch_database

BEFORE_MIGRATIONS = pathlib.Path(__file__).with_name("schema_before_migrations.sql")
BEFORE = 13  # steps 0001-0013 make what the code before them made (0014 is the first new table since)


def schema(url: str) -> dict[str, list[tuple]]:
    """What a migration makes, by kind, apart from the record of the steps themselves."""
    queries = {
        "columns": """
            SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'""",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename <> 'schema_migrations'",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'schema_migrations'""",
        "tables": """
            SELECT relname, relkind, reloptions, pg_get_partkeydef(oid) FROM pg_class
            WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'S')
            AND relname <> 'schema_migrations'""",
        "functions": """
            SELECT proname, pg_get_function_identity_arguments(oid), pg_get_function_result(oid), prosrc
            FROM pg_proc WHERE pronamespace = 'public'::regnamespace""",
        "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
        "types": """
            SELECT t.typname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod)
            FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid JOIN pg_attribute a ON a.attrelid = c.oid
            WHERE t.typnamespace = 'public'::regnamespace AND c.relkind = 'c'""",
    }
    with psycopg.connect(url) as conn:
        return {kind: sorted(conn.execute(query).fetchall(), key=repr) for kind, query in queries.items()}


def applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def made_by_the_code_before_migrations(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("\n".join(line for line in BEFORE_MIGRATIONS.read_text().splitlines() if line[:1] != "\\"))


@pytest.fixture
def database(server_urls):
    with scratch_database(server_urls[0], "mm_migrations") as url:
        yield url


def test_a_fresh_database_migrated_twice_applies_each_step_once(database):
    first = migrations.migrate(database)
    second = migrations.migrate(database)

    every = [(step.version, step.name) for step in migrations.steps()]
    assert [(step.version, step.name) for step in first] == every
    assert second == []
    assert applied(database) == every


def test_the_adopting_steps_make_the_schema_the_code_before_migrations_made(database, server_urls):
    migrations.migrate(database, upto=BEFORE)
    with scratch_database(server_urls[0], "mm_before") as before:
        made_by_the_code_before_migrations(before)
        assert schema(database) == schema(before)


def test_the_event_store_step_makes_the_libraries_table(database, server_urls):
    from eventstore.postgres import EVENTS_TABLE, Recorder, datastore_from_url

    migrations.migrate(database, upto=1)
    with scratch_database(server_urls[0], "mm_library") as library:
        datastore = datastore_from_url(library, pool_size=1, max_overflow=0)
        try:
            Recorder(datastore, events_table_name=EVENTS_TABLE).create_table()
        finally:
            datastore.close()
        with psycopg.connect(database, autocommit=True) as conn:  # the rest of step 0001 is ours
            conn.execute("DROP TABLE mm_claims; DROP FUNCTION mm_append; DROP FUNCTION mm_check_versions")
        assert schema(database) == schema(library)


def test_a_database_made_before_migrations_adopts_the_steps_and_keeps_its_rows(database):
    made_by_the_code_before_migrations(database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO mm_positions (name, position) VALUES ('workspaces', 7)")
        conn.execute("INSERT INTO rm_workspaces VALUES ('ws_1', 'org_1', 1, false, '{}')")
        store_id = conn.execute("SELECT value FROM mm_settings WHERE key = 'store_id'").fetchone()

    migrations.migrate(database)

    assert applied(database) == [(step.version, step.name) for step in migrations.steps()]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT position FROM mm_positions WHERE name = 'workspaces'").fetchone() == (7,)
        assert conn.execute("SELECT workspace_id FROM rm_workspaces").fetchall() == [("ws_1",)]
        assert conn.execute("SELECT value FROM mm_settings WHERE key = 'store_id'").fetchone() == store_id


def test_an_adopted_database_has_the_schema_of_a_fresh_one(database, server_urls):
    made_by_the_code_before_migrations(database)
    migrations.migrate(database)
    with scratch_database(server_urls[0], "mm_fresh") as fresh:
        migrations.migrate(fresh)
        assert schema(database) == schema(fresh)


def test_two_migrates_at_once_both_succeed_and_apply_each_step_once(database):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(migrations.migrate, [database, database]))

    assert sorted(len(done) for done in results) == [0, len(migrations.steps())]
    assert applied(database) == [(step.version, step.name) for step in migrations.steps()]


def test_a_step_changed_after_it_was_applied_is_refused_before_anything_is_applied(database):
    migrations.migrate(database, upto=2)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")

    with pytest.raises(migrations.ChangedStep, match="0002_hash_chain"):
        migrations.migrate(database)
    assert [version for version, _ in applied(database)] == [1, 2]


def test_a_view_rebuilds_from_the_text_of_its_steps():
    from projections.analytics import Analytics
    from projections.workspaces import WorkspaceListing

    assert migrations.ddl(WorkspaceListing.name) == migrations.steps()[3].sql
    assert "rm_analytics_counters ALTER COLUMN value TYPE numeric" in migrations.ddl(Analytics.name)  # 0009 and 0010
