"""Analytics through HTTP: a workload with a known catalog and known run outcomes, every number checked
against what the workload implies and against a fresh rebuild of the projection from the event store."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import psycopg

import migrations
from projections import analytics
from projections.analytics import Analytics
from tests.conftest import assert_422, open_store, position_of
from tests.support import eventually


def rebuild_counters(settings, workspace_id: str, batch_size: int = 1000) -> dict[str, int]:
    """Replays the whole log into a fresh schema with a new Analytics projection, `batch_size` events a batch;
    returns its counters."""
    schema = "rebuild_" + secrets.token_hex(4)
    store = open_store(settings.database_url, max_overflow=0)

    async def replay() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET search_path TO {schema}")
            await conn.execute(migrations.ddl(analytics.NAME))
            handler, after = Analytics(), 0
            while batch := store.read(after, batch_size):
                async with conn.transaction():
                    await handler.handle(conn, batch)
                after = batch[-1].position
            values = (await analytics.counters(conn, [workspace_id]))[workspace_id]
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            return values

    try:
        return asyncio.run(replay())
    finally:
        store.close()


def test_every_analytics_answer_matches_the_workload_and_a_rebuild(api, org, settings):
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "numbers"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"

    def add(kind, **fields):
        response = api.post(f"{base}/{kind}", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    app1, app2 = add("apps", name="one")["app_id"], add("apps", name="two")["app_id"]
    for app, version in ((app1, "1"), (app1, "2"), (app2, "1")):
        add("releases", app_id=app, version=version)
    echo = add("endpoints", app_id=app1, name="echo")["endpoint_id"]
    broken = add("endpoints", app_id=app1, name="broken", url="http://127.0.0.1:9/nothing")["endpoint_id"]
    add("augmentations", app_id=app1, name="rag", type="retrieval")
    ns1 = add("namespaces", name="docs", app_id=app1)["namespace_id"]
    ns2 = add("namespaces", name="misc")["namespace_id"]
    add("threads", namespace_id=ns1, title="a")
    add("threads", namespace_id=ns1, title="b")
    add("sources", name="s1", type="pdf", namespace_id=ns1, status="indexed", chunks=10, tokens=100, bytes=1000)
    s2 = add("sources", name="s2", type="web", chunks=5, tokens=50, bytes=500)["source_id"]
    s3 = add("sources", name="s3", type="pdf", namespace_id=ns2, status="failed")["source_id"]
    assert api.put(f"{base}/sources/{s2}", json={"status": "indexed"}).status_code == 200
    assert api.delete(f"{base}/sources/{s3}").status_code == 200
    add("secrets", name="k1", type="api_key")
    add("secrets", name="k2", type="api_key", is_active=False)
    add("secrets", name="p", type="password")
    add("models", name="m", provider="p")
    actions = f"{base}/apps/{app1}/actions"
    ok = api.post(actions, json={"name": "ok", "endpoint_id": echo, "namespace_id": ns1}).json()["action_id"]
    failing = api.post(
        actions,
        json={"name": "bad", "endpoint_id": broken, "namespace_id": ns1, "max_retries": 1, "retry_delay_seconds": 0},
    ).json()["action_id"]
    api.post(
        actions,
        json={
            "name": "cron",
            "endpoint_id": echo,
            "namespace_id": ns1,
            "action_type": "scheduled",
            "schedule_type": "cron",
            "cron_expression": "0 0 1 1 *",
            "is_enabled": False,
        },
    )
    gone = api.post(actions, json={"name": "gone", "endpoint_id": echo, "namespace_id": ns1}).json()["action_id"]
    api.delete(f"{actions}/{gone}")
    for action_id in (ok, ok, failing):
        assert api.post(f"{actions}/{action_id}/trigger", json={}).status_code == 202

    executions = eventually(
        lambda: api.get(f"{base}/analytics/executions").json(),
        until=lambda executions: executions["total"] >= 3,
        timeout=30,
        interval=0.1,
        what="three executions",
    )
    assert executions == {"total": 3, "success": 2, "failed": 1, "success_rate": 66.67}

    last = api.put(f"{base}/models/{add('models', name='x')['model_id']}", json={"provider": "q"})
    wait = {"X-Min-Position": position_of(last)}
    resources = {
        "sources": 2,
        "augmentations": 1,
        "endpoints": 2,
        "namespaces": 2,
        "apps": 2,
        "threads": 2 + 3,
        "actions": 3,
        "secrets": 3,
        "models": 2,
    }
    assert api.get(f"{base}/analytics/resources", headers=wait).json() == resources
    summary = api.get(f"{base}/analytics", headers=wait).json()
    assert summary["resources"] == resources and summary["executions"] == executions
    assert summary["workspace_id"] == ws and summary["updated_at"]
    assert api.get(f"{base}/apps/{app1}/analytics").json() == {
        "app_id": app1,
        "augmentations": 1,
        "namespaces": 1,
        "endpoints": 2,
        "releases": 2,
    }
    assert api.get(f"{base}/apps/{app2}/analytics").json()["releases"] == 1
    namespace = {"namespace_id": ns1, "threads": 2 + 3, "sources": 1}  # catalog threads, and those its runs started
    assert api.get(f"{base}/namespaces/{ns1}/analytics").json() == namespace
    assert api.get(f"{base}/analytics/actions").json() == {
        "total_actions": 3,
        "enabled_actions": 2,
        "trigger_actions": 2,
        "scheduled_actions": 1,
    }
    assert api.get(f"{base}/analytics/secrets").json() == {
        "total_secrets": 3,
        "active_secrets": 2,
        "secrets_by_type": {"api_key": 2, "password": 1},
    }
    assert api.get(f"{base}/analytics/sources").json() == {
        "total_sources": 2,
        "indexed_sources": 2,
        "failed_sources": 0,
        "pending_sources": 0,
        "total_chunks": 15,
        "total_tokens": 150,
        "total_bytes": 1500,
        "workspace_sources": 1,
        "namespace_sources": 1,
        "sources_by_type": {"pdf": 1, "web": 1},
        "sources_by_status": {"indexed": 2},
    }

    hourly = api.get(f"{base}/analytics/executions/hourly", params={"hours": 5}).json()
    assert (hourly["metric"], hourly["period"], len(hourly["data"])) == ("executions", "hourly", 5)
    stamps = [datetime.fromisoformat(p["timestamp"]) for p in hourly["data"]]
    assert all(b - a == timedelta(hours=1) for a, b in zip(stamps, stamps[1:], strict=False))
    assert stamps[-1] == datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert sum(p["value"] for p in hourly["data"]) == 3 and hourly["data"][-1]["value"] in (0, 3)
    daily = api.get(f"{base}/analytics/executions/daily").json()
    assert len(daily["data"]) == 30 and daily["data"][-2]["value"] + daily["data"][-1]["value"] == 3
    assert datetime.fromisoformat(daily["data"][0]["timestamp"]).hour == 0
    assert_422(api.get(f"{base}/analytics/executions/hourly", params={"hours": 169}), ["query", "hours"])
    assert_422(api.get(f"{base}/analytics/executions/daily", params={"days": 0}), ["query", "days"])

    rollup = api.get(f"/v1/orgs/{org}/analytics").json()
    assert rollup["org_id"] == org and rollup["workspace_count"] == 1
    assert rollup["resources"] == resources and rollup["executions"] == executions
    assert rollup["workspaces"][0]["workspace_id"] == ws and rollup["workspaces"][0]["name"] == "numbers"
    narrowed = api.get(f"/v1/orgs/{org}/analytics", params={"workspace_id": ws}).json()
    assert narrowed["workspace_count"] == 1

    live = {k: v for k, v in rebuild_counters(settings, ws).items() if v}
    with psycopg.connect(settings.database_url) as conn:
        stored = dict(
            conn.execute(
                "SELECT key, value FROM rm_analytics_counters WHERE workspace_id = %s AND value <> 0", (ws,)
            ).fetchall()
        )
        # A run's workspace is kept only while the run is open; these have all ended.
        open_runs = conn.execute(
            "SELECT count(*) FROM rm_analytics_items WHERE kind = 'run' AND state = %s", (ws.encode(),)
        ).fetchone()
    assert stored == live
    assert open_runs == (0,)
    # Event by event, every run spans batches (its workspace is read back, its row removed at its end): the same.
    assert {k: v for k, v in rebuild_counters(settings, ws, batch_size=1).items() if v} == live


def test_source_counts_summed_past_bigint_are_counted_exactly(api, org, system):
    """A source's tokens and bytes may each be up to 2^53, so 1,025 sources at the top sum past bigint. Kept
    in a bigint, that sum failed the analytics batch at every retry, and the view stopped for every org."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "big"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    top = 2**53
    sources = 1025

    def add(count: int) -> str:
        with httpx.Client(base_url=system.url, headers=api.headers, timeout=30) as client:
            for i in range(count):
                response = client.post(f"{base}/sources", json={"name": f"s{i}", "tokens": top, "bytes": top})
                assert response.status_code == 201, response.text
            return position_of(response)

    with ThreadPoolExecutor(8) as pool:
        positions = list(pool.map(add, [sources // 8 + (i < sources % 8) for i in range(8)]))
    wait = {"X-Min-Position": max(positions, key=int)}
    answer = api.get(f"{base}/analytics/sources", headers=wait).json()
    assert (answer["total_sources"], answer["total_tokens"], answer["total_bytes"]) == (
        sources,
        sources * top,
        sources * top,
    )
    # ...and the view goes on: a workspace made after them is counted too.
    after = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "after"})
    later = api.get(f"/v1/orgs/{org}/workspaces/{after.json()['workspace_id']}/analytics/resources",
                    headers={"X-Min-Position": position_of(after)})  # fmt: skip
    assert later.status_code == 200 and later.json()["sources"] == 0
