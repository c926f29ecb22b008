"""The auditors' stream: paged reads, a live tail, NDJSON export, and tamper evidence."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import psycopg
import pytest

from tests.conftest import (
    ROOT_TOKEN,
    as_token,
    assert_422,
    assert_envelope,
    issue_token,
    position_of,
    process_environment,
)

CLI = [sys.executable, "-m", "mechamental.cli"]


def test_an_orgs_raw_events_in_log_order_with_filters(api, system, org):
    first = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "a"})
    workspace_id = first.json()["workspace_id"]
    api.put(f"/v1/orgs/{org}/workspaces/{workspace_id}", json={"description": "d"})
    api.post(f"/v1/orgs/other-{org}/workspaces", json={"name": "theirs"})
    page = api.get(f"/v1/orgs/{org}/events", params={"limit": 200}).json()
    events = page["events"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert {e["type"] for e in events} >= {"WorkspaceCreated", "WorkspaceUpdated"}
    created = next(e for e in events if e["type"] == "WorkspaceCreated")
    assert set(created) == {
        "position",
        "event_id",
        "type",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "occurred_at",
        "actor",
        "trace_id",
        "schema_version",
        "data",
        "hash",
    }
    assert (created["aggregate_type"], created["aggregate_id"], created["data"]["name"]) == (
        "workspace",
        workspace_id,
        "a",
    )
    assert created["position"] == int(position_of(first)) and created["actor"]["principal_type"] == "root"
    assert all("theirs" not in json.dumps(e) for e in events)
    only = api.get(f"/v1/orgs/{org}/events", params={"type": "WorkspaceUpdated"}).json()["events"]
    assert [e["type"] for e in only] == ["WorkspaceUpdated"]
    by_aggregate = api.get(f"/v1/orgs/{org}/events", params={"aggregate_id": workspace_id}).json()["events"]
    assert {e["aggregate_id"] for e in by_aggregate} == {workspace_id}
    one = api.get(f"/v1/orgs/{org}/events", params={"limit": 1}).json()
    two = api.get(f"/v1/orgs/{org}/events", params={"limit": 1, "cursor": one["next_cursor"]}).json()
    assert one["has_more"] and two["events"][0]["position"] > one["events"][0]["position"]
    assert_422(api.get(f"/v1/orgs/{org}/events", params={"after": -1}), ["query", "after"])
    with as_token(system, issue_token(api, org, "member")) as member:
        body = assert_envelope(member.get(f"/v1/orgs/{org}/events"), 403, "FORBIDDEN")
        assert body["details"]["required_permission"] == "audit:read"
    with as_token(system, issue_token(api, org, "auditor")) as auditor:
        assert auditor.get(f"/v1/orgs/{org}/events").status_code == 200


def test_the_live_tail_resumes_from_last_event_id(api, system, org):
    api.post(f"/v1/orgs/{org}/workspaces", json={"name": "before"})
    received: list[dict] = []

    def tail(headers: dict, count: int) -> None:
        with (
            httpx.Client(base_url=system.url, timeout=20) as client,
            client.stream(
                "GET", f"/v1/orgs/{org}/events/stream", headers={"Authorization": f"Bearer {ROOT_TOKEN}", **headers}
            ) as response,
        ):
            current: dict = {}
            for line in response.iter_lines():
                if line.startswith("id:"):
                    current["id"] = int(line[3:].strip())
                elif line.startswith("data:"):
                    current["data"] = json.loads(line[5:].strip())
                elif not line and current:
                    received.append(current)
                    current = {}
                    if len(received) >= count:
                        return

    reader = threading.Thread(target=tail, args=({}, 3))
    reader.start()
    api.post(f"/v1/orgs/{org}/workspaces", json={"name": "during"})
    reader.join(20)
    assert [r["data"]["position"] for r in received[:3]] == sorted(r["data"]["position"] for r in received[:3])
    last = received[1]["id"]
    again: list[dict] = received
    received = []
    reader = threading.Thread(target=tail, args=({"Last-Event-ID": str(last)}, 1))
    reader.start()
    reader.join(20)
    assert received and received[0]["id"] == again[2]["id"]  # no loss, no repeat


@pytest.fixture()
def fresh_database(server_urls, tmp_path):
    with process_environment(server_urls, tmp_path, "audit") as env:
        subprocess.run([*CLI, "migrate"], env=env, check=True, capture_output=True, timeout=60)
        yield env


def test_export_streams_ndjson_and_verify_names_the_altered_event(fresh_database):
    env = fresh_database
    for org in ("acme", "acme", "acme", "globex"):
        done = subprocess.run(
            [*CLI, "tokens", "create", "--org", org, "--name", "t"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    exported = subprocess.run(
        [*CLI, "events", "export", "--org", "acme"], env=env, capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["type"] for e in lines] == ["TokenIssued"] * 3 and "secret" not in exported.stdout.lower().replace(
        "secret_hash", ""
    )
    after = subprocess.run(
        [*CLI, "events", "export", "--org", "acme", "--after", str(lines[0]["position"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(after.stdout.splitlines()) == 2

    def verify(*extra) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "events", "verify", *extra], env=env, capture_output=True, text=True, timeout=60)

    assert verify().returncode == 0 and "4 events" in verify().stdout
    target = lines[1]["position"]
    with psycopg.connect(env["MECHAMENTAL_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "UPDATE stored_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            '\'"role":"owner"\', \'"role":"admin"\'), \'UTF8\') WHERE notification_id = %s',
            (target,),
        )
    broken = verify()
    assert broken.returncode == 1 and f"position {target}" in broken.stdout and "altered" in broken.stdout
    assert verify("--org", "globex").returncode == 0  # another org's events are intact
    with psycopg.connect(env["MECHAMENTAL_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("DELETE FROM stored_events WHERE notification_id = %s", (lines[0]["position"],))
    removed = verify()
    assert (
        removed.returncode == 1 and f"position {lines[0]['position']}" in removed.stdout and "removed" in removed.stdout
    )
