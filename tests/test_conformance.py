"""Answers the API reference (the seeds) prescribes: 404 for unknown resources behind analytics and activity,
the six activity verbs, and namespace thread counts."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg

import migrations
from activity.records import ACTIONS, ActivityRecord, new_id
from activity.store import storable
from tests.conftest import assert_422, assert_envelope, position_of
from tests.support import eventually


def _workspace(api, org: str) -> str:
    return api.post(f"/v1/orgs/{org}/workspaces", json={"name": "conformance"}).json()["workspace_id"]


def _add(api, base: str, kind: str, **fields) -> dict:
    response = api.post(f"{base}/{kind}", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def test_app_and_namespace_analytics_of_an_unknown_id_are_404(api, org):
    base = f"/v1/orgs/{org}/workspaces/{_workspace(api, org)}"
    app = _add(api, base, "apps", name="a")["app_id"]
    namespace = _add(api, base, "namespaces", name="n")
    wait = {"X-Min-Position": position_of(api.put(f"{base}/namespaces/{namespace['namespace_id']}", json={}))}
    assert api.get(f"{base}/apps/{app}/analytics", headers=wait).status_code == 200
    assert api.get(f"{base}/namespaces/{namespace['namespace_id']}/analytics", headers=wait).status_code == 200
    body = assert_envelope(api.get(f"{base}/apps/app_unknown/analytics", headers=wait), 404, "RESOURCE_NOT_FOUND")
    assert body["details"] == {"resource_type": "app", "resource_id": "app_unknown"}
    body = assert_envelope(api.get(f"{base}/namespaces/ns_unknown/analytics"), 404, "RESOURCE_NOT_FOUND")
    assert body["details"] == {"resource_type": "namespace", "resource_id": "ns_unknown"}
    # An id of another kind is not an app; nor is a deleted app one.
    assert api.get(f"{base}/apps/{namespace['namespace_id']}/analytics").status_code == 404
    gone = api.delete(f"{base}/apps/{app}")
    wait = {"X-Min-Position": position_of(gone)}
    assert_envelope(api.get(f"{base}/apps/{app}/analytics", headers=wait), 404, "RESOURCE_NOT_FOUND")


def test_app_analytics_right_after_the_create_is_not_404(api, org):
    base = f"/v1/orgs/{org}/workspaces/{_workspace(api, org)}"
    app = _add(api, base, "apps", name="fresh")["app_id"]
    assert api.get(f"{base}/apps/{app}/analytics").status_code == 200


def test_endpoint_activity_is_found_only_under_its_own_app(api, org):
    base = f"/v1/orgs/{org}/workspaces/{_workspace(api, org)}"
    mine, other = _add(api, base, "apps", name="mine")["app_id"], _add(api, base, "apps", name="other")["app_id"]
    endpoint = _add(api, base, "endpoints", app_id=mine, name="e")["endpoint_id"]
    wait = {"X-Min-Position": position_of(api.put(f"{base}/endpoints/{endpoint}", json={"name": "e2"}))}
    api.get(f"{base}/endpoints/{endpoint}", headers=wait)
    for suffix in ("activity", "activity/summary"):
        assert api.get(f"{base}/apps/{mine}/endpoints/{endpoint}/{suffix}").status_code == 200
        for app in (other, "app_unknown"):
            body = assert_envelope(
                api.get(f"{base}/apps/{app}/endpoints/{endpoint}/{suffix}"), 404, "RESOURCE_NOT_FOUND"
            )
            assert body["details"]["resource_id"] == endpoint
        assert_envelope(api.get(f"{base}/apps/{mine}/endpoints/ep_unknown/{suffix}"), 404, "RESOURCE_NOT_FOUND")


def _records(settings, org: str, path_part: str, count: int) -> list[tuple[str, str, str]]:
    def stored() -> list[tuple[str, str, str]]:
        with psycopg.connect(settings.database_url) as conn:
            return conn.execute(
                "SELECT action, resource_type, convert_from(record, 'UTF8')::jsonb ->> 'action' FROM activity "
                "WHERE org_id = %s AND convert_from(record, 'UTF8')::jsonb ->> 'path' LIKE %s ORDER BY ts",
                (org, f"%{path_part}%"),
            ).fetchall()

    return eventually(stored, until=lambda rows: len(rows) >= count, timeout=20, interval=0.1, what=f"{count} records")


def test_deploys_are_recorded_with_the_six_verbs_and_the_filter_refuses_others(api, org, settings):
    ws = _workspace(api, org)
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = _add(api, base, "apps", name="a")["app_id"]
    release = _add(api, base, "releases", app_id=app, version="1")["release_id"]
    env = api.post(f"{base}/environments", json={"name": "prod"}).json()["environment"]["environment_id"]
    assert api.post(f"{base}/environments/{env}/deploy", json={"app_id": app, "release_id": release}).is_success
    assert api.delete(f"{base}/environments/{env}/deploy/{app}").is_success
    rows = _records(settings, org, "/deploy", 2)
    assert [(action, resource) for action, resource, _ in rows] == [("create", "deployment"), ("delete", "deployment")]
    assert [answered for _, _, answered in rows] == ["create", "delete"]  # the record as feeds answer it
    assert_422(api.get(f"{base}/activity/search", params={"action": "deploy"}), ["query", "action"])
    assert_422(api.get(f"{base}/activity/search", params={"action": "undeploy"}), ["query", "action"])
    assert_422(api.get(f"{base}/activity/actions/deploy"), ["path", "action"])
    for verb in ACTIONS:
        assert api.get(f"{base}/activity/search", params={"action": verb}).status_code == 200
    created = api.get(f"{base}/activity/search", params={"action": "create", "resource_type": "deployment"}).json()
    assert [a["action"] for a in created["activities"]] == ["create"]


def test_records_from_before_the_six_verbs_are_migrated_once(settings):
    org, now = "org-" + secrets.token_hex(6), datetime.now(UTC)
    old = [
        ActivityRecord(
            id=new_id(), org_id=org, timestamp=now, trace_id="t", action=verb,
            status_code=200, success=True, duration_ms=1.0, resource_type="deployment",
        )  # fmt: skip
        for verb in ("deploy", "undeploy", "create")
    ]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        day = now.date()
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS activity_{day:%Y%m%d} PARTITION OF activity FOR VALUES FROM ('{day}') "
            f"TO ('{day + timedelta(days=1)}')"
        )
        for record in old:  # as an older projector stored them: verbatim
            conn.execute(
                "INSERT INTO activity (id, org_id, ts, action, resource_type, success, duration_ms, record) "
                "VALUES (%s, %s, %s, %s, 'deployment', true, 1, %s)",
                (record.id, org, record.timestamp, record.action, msgspec.json.encode(record)),
            )
            conn.execute(
                "INSERT INTO activity_hourly VALUES (%s, 'org', %s, date_trunc('hour', %s::timestamptz), %s, "
                "'deployment', 1, 1, 1, 0)",
                (org, org, record.timestamp, record.action),
            )
        conn.execute("DELETE FROM activity_migrations WHERE name = 'six-verbs'")
        conn.execute(migrations.ddl("activity"))
        conn.execute(migrations.ddl("activity"))  # once: a second run changes nothing
        stored = conn.execute(
            "SELECT action, convert_from(record, 'UTF8')::jsonb ->> 'action' FROM activity WHERE org_id = %s "
            "ORDER BY id",
            (org,),
        ).fetchall()
        hourly = conn.execute(
            "SELECT action, requests FROM activity_hourly WHERE org_id = %s ORDER BY action", (org,)
        ).fetchall()
    assert stored == [("create", "create"), ("delete", "delete"), ("create", "create")]
    assert hourly == [("create", 2), ("delete", 1)]
    # And one an older API process still publishes during an upgrade is stored with its verb of the six.
    assert storable(msgspec.structs.replace(old[0], action="undeploy")).action == "delete"


def test_namespace_analytics_counts_the_threads_its_actions_runs_start(api, org, settings):
    from tests.test_api_analytics import rebuild_counters

    ws = _workspace(api, org)
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = _add(api, base, "apps", name="a")["app_id"]
    endpoint = _add(api, base, "endpoints", app_id=app, name="echo")["endpoint_id"]
    docs, other = _add(api, base, "namespaces", name="docs")["namespace_id"], _add(api, base, "namespaces", name="o")
    _add(api, base, "threads", namespace_id=docs, title="catalog thread")
    actions = f"{base}/apps/{app}/actions"
    action = api.post(actions, json={"name": "go", "endpoint_id": endpoint, "namespace_id": docs}).json()
    fixed = api.post(
        actions,
        json={
            "name": "fixed",
            "endpoint_id": endpoint,
            "namespace_id": other["namespace_id"],
            "thread_mode": "fixed",
            "thread_id": "thr_same",
        },
    ).json()
    for action_id in (action["action_id"],) * 3 + (fixed["action_id"],) * 2:
        assert api.post(f"{actions}/{action_id}/trigger", json={}).status_code == 202
    eventually(
        lambda: api.get(f"{base}/analytics/executions").json()["total"],
        until=lambda total: total >= 5,
        timeout=30,
        interval=0.1,
        what="five executions",
    )
    wait = {"X-Min-Position": position_of(api.put(f"{base}/apps/{app}", json={"name": "a2"}))}
    assert api.get(f"{base}/analytics/resources", headers=wait).json()["threads"] == 1 + 3 + 1
    assert api.get(f"{base}/namespaces/{docs}/analytics", headers=wait).json()["threads"] == 1 + 3
    assert api.get(f"{base}/namespaces/{other['namespace_id']}/analytics", headers=wait).json()["threads"] == 1
    counters = rebuild_counters(settings, ws)
    assert counters[f"namespace:{docs}.threads"] == 4 and counters[f"namespace:{other['namespace_id']}.threads"] == 1
