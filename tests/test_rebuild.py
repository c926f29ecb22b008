"""Rebuilding views from the event store: identical to the live views, swapped in under live readers,
resumable, and never two at once."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

import migrations
from mechamental.bootstrap import read_models
from pipeline.roles import try_leadership
from projections.rebuild import RebuildRunning, rebuild, tables_of
from tests.conftest import open_store
from tests.support import eventually


@pytest.fixture()
def store(settings):
    store = open_store(settings.database_url)
    yield store
    store.close()


def quiesce(settings, store) -> int:
    """Waits until nothing is being written and every view has applied everything."""
    names = [m.name for m in read_models()]

    def quiet_head() -> int | None:
        head = store.head()
        with psycopg.connect(settings.database_url) as conn:
            reached = dict(
                conn.execute("SELECT name, position FROM mm_positions WHERE name = ANY(%s)", (names,)).fetchall()
            )
        if all(reached.get(n, 0) >= head for n in names) and store.head() == head:
            time.sleep(0.3)  # quiet is no write for a while: the pause is what is checked, not a wait
            if store.head() == head:
                return head
        return None

    return eventually(
        quiet_head, until=lambda head: head is not None, timeout=30, interval=0.1, what="the system to go quiet"
    )


def differing_rows(conn, schema: str, table: str) -> int:
    return conn.execute(
        f"SELECT count(*) FROM ((SELECT * FROM public.{table} EXCEPT ALL SELECT * FROM {schema}.{table}) "
        f"UNION ALL (SELECT * FROM {schema}.{table} EXCEPT ALL SELECT * FROM public.{table})) AS d"
    ).fetchone()[0]


def test_every_view_rebuilt_from_the_log_equals_the_live_one_row_by_row(api, org, settings, store):
    # A mixed workload across every aggregate.
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "replay"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    api.post(f"/v1/orgs/{org}/tokens", json={"name": "t", "role": "viewer"})
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    release = api.post(f"{base}/releases", json={"app_id": app, "version": "1"}).json()["release_id"]
    env = api.post(f"{base}/environments", json={"name": "prod"}).json()["environment"]["environment_id"]
    api.post(f"{base}/environments/{env}/deploy", json={"app_id": app, "release_id": release})
    ns = api.post(f"{base}/namespaces", json={"name": "n"}).json()["namespace_id"]
    endpoint = api.post(f"{base}/endpoints", json={"app_id": app, "name": "e"}).json()["endpoint_id"]
    action = api.post(f"{base}/apps/{app}/actions", json={"name": "x", "endpoint_id": endpoint, "namespace_id": ns})
    api.post(f"{base}/apps/{app}/actions/{action.json()['action_id']}/trigger", json={})
    api.post(f"{base}/sources", json={"name": "s", "status": "indexed", "chunks": 3})
    # Renamed, then updated without a name (which keeps it); and one deleted: the replay sees each in one batch.
    renamed = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "before"}).json()["workspace_id"]
    api.put(f"/v1/orgs/{org}/workspaces/{renamed}", json={"name": "after"})
    api.put(f"/v1/orgs/{org}/workspaces/{renamed}", json={"description": "named no more"})
    gone = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "gone"}).json()["workspace_id"]
    api.delete(f"/v1/orgs/{org}/workspaces/{gone}")
    head = quiesce(settings, store)

    models = read_models()  # all at once, in one pass over the log
    assert asyncio.run(rebuild(settings.database_url, store, models, swap=False)) == head
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for model in models:
            tables = tables_of(migrations.ddl(model.name))
            for table in tables:
                assert differing_rows(conn, f"rebuild_{model.name}", table) == 0, (model.name, table)
            # built after the replay, the fresh tables have every index the live ones have
            assert index_names(conn, f"rebuild_{model.name}") == index_names(conn, "public", tables)
            # and planner statistics for every table that holds rows, before any reader meets them
            for table in tables:
                if conn.execute(f"SELECT EXISTS (SELECT FROM rebuild_{model.name}.{table})").fetchone()[0]:
                    analyzed = conn.execute(
                        "SELECT count(*) FROM pg_stats WHERE schemaname = %s AND tablename = %s",
                        (f"rebuild_{model.name}", table),
                    ).fetchone()[0]
                    assert analyzed > 0, (model.name, table)
            conn.execute(f"DROP SCHEMA rebuild_{model.name} CASCADE")
            conn.execute("DELETE FROM mm_positions WHERE name = %s", (f"rebuild:{model.name}",))


def index_names(conn, schema: str, tables: list[str] | None = None) -> set[str]:
    query = "SELECT indexname FROM pg_indexes WHERE schemaname = %s"
    if tables is not None:
        query += " AND tablename = ANY(%s)"
    return {row[0] for row in conn.execute(query, (schema, tables) if tables is not None else (schema,))}


def test_a_swap_under_live_readers_never_shows_a_half_built_view(api, org, settings, store):
    made = [api.post(f"/v1/orgs/{org}/workspaces", json={"name": f"w{i}"}) for i in range(30)]
    expected = {m.json()["workspace_id"] for m in made}
    answers: list = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            response = api.get(
                f"/v1/orgs/{org}/workspaces",
                params={"limit": 200},
                headers={"X-Min-Position": made[-1].headers["X-Event-Position"]},
            )
            answers.append((response.status_code, {w["workspace_id"] for w in response.json().get("workspaces", [])}))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        workspaces = next(m for m in read_models() if m.name == "workspaces")
        asyncio.run(rebuild(settings.database_url, store, workspaces, swap=True))
        swapped = len(answers)
        eventually(lambda: len(answers) >= swapped + 3, what="three reads after the swap")
    finally:
        stop.set()
        reader.join()
    assert answers and all(status == 200 and seen == expected for status, seen in answers)
    api.post(f"/v1/orgs/{org}/workspaces", json={"name": "after"})  # the live projector goes on after the swap
    listed = api.get(
        f"/v1/orgs/{org}/workspaces", params={"limit": 200}, headers={"X-Min-Position": str(store.head())}
    ).json()
    assert listed["total"] == 31


def test_an_interrupted_rebuild_resumes_and_two_never_run_at_once(settings, store):
    tokens = next(m for m in read_models() if m.name == "tokens")

    class Interrupt(Exception):
        pass

    def interrupt(position: int, head: int, rate: float) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        asyncio.run(rebuild(settings.database_url, store, tokens, swap=False, batch_size=10, progress=interrupt))
    with psycopg.connect(settings.database_url) as conn:
        resumed_from = conn.execute("SELECT position FROM mm_positions WHERE name = 'rebuild:tokens'").fetchone()[0]
    assert resumed_from > 0
    seen: list[int] = []
    asyncio.run(
        rebuild(
            settings.database_url,
            store,
            tokens,
            swap=False,
            batch_size=10,
            progress=lambda position, head, rate: seen.append(position),
        )
    )
    assert seen and seen[0] > resumed_from  # carried on, did not start again

    async def hold_and_try() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as holder:
            assert await try_leadership(holder, "rebuild.tokens")
            with pytest.raises(RebuildRunning):
                await rebuild(settings.database_url, store, tokens, swap=False)

    asyncio.run(hold_and_try())
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA rebuild_tokens CASCADE")
        conn.execute("DELETE FROM mm_positions WHERE name = 'rebuild:tokens'")
