"""What the audit stream's readers get: a total like every list, no credential material, and a stream that a
revocation ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx
import psycopg

from commands.tokens import hash_secret
from tests.conftest import as_token, issue_token
from tests.support import eventually

CLI = [sys.executable, "-m", "mechamental.cli"]
CREDENTIALS = "https://robot:hunter2@api.example.com/run?api_key=sk-live-123&region=eu"
MASKED = "https://***@api.example.com/run?api_key=***&region=***"


def test_a_revoked_tokens_open_stream_ends(api, system, org):
    api.post(f"/v1/orgs/{org}/workspaces", json={"name": "watched"})
    token = issue_token(api, org, "auditor")
    received: list[str] = []
    ended = threading.Event()

    def tail() -> None:
        with (
            httpx.Client(base_url=system.url, timeout=httpx.Timeout(10, read=60)) as client,
            client.stream("GET", f"/v1/orgs/{org}/events/stream", headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("id:"):
                    received.append(line)
        ended.set()  # the server ended it (a read timeout raises instead)

    threading.Thread(target=tail, daemon=True).start()
    eventually(lambda: received, what="the stream to deliver an event")
    assert not ended.is_set()
    revoked = api.delete(f"/v1/orgs/{org}/tokens/{token.partition('.')[0]}")
    assert revoked.status_code == 200, revoked.text
    assert ended.wait(10), "the revoked token's stream is still open"


def _export(settings, org: str) -> str:
    env = {**os.environ, "MECHAMENTAL_DATABASE_URL": settings.database_url}
    done = subprocess.run(
        [*CLI, "events", "export", "--org", org], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _stream(system, token: str, org: str, count: int) -> str:
    lines = []
    with (
        httpx.Client(base_url=system.url, timeout=20) as client,
        client.stream("GET", f"/v1/orgs/{org}/events/stream", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        for line in r.iter_lines():
            lines.append(line)
            if sum(x.startswith("id:") for x in lines) >= count and not line:
                return "\n".join(lines)
    return "\n".join(lines)


def test_readers_get_no_token_verifier_and_no_url_credentials(api, system, org, settings):
    token = issue_token(api, org, "viewer")
    digest = hash_secret(token.partition(".")[2])
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "w"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    endpoint = api.post(f"{base}/endpoints", json={"app_id": app, "name": "e", "url": CREDENTIALS}).json()
    api.put(f"{base}/endpoints/{endpoint['endpoint_id']}", json={"url": CREDENTIALS + "&v=2"})
    auditor = issue_token(api, org, "auditor")
    with as_token(system, auditor) as reader:
        answer = reader.get(f"/v1/orgs/{org}/events", params={"limit": 200})
    assert answer.status_code == 200
    events = answer.json()["events"]
    issued = [e for e in events if e["type"] == "TokenIssued"]
    assert len(issued) == 2 and {e["data"]["secret_hash"] for e in issued} == {"***"}
    added = next(e for e in events if e["type"] == "CatalogItemAdded" and e["data"]["kind"] == "endpoints")
    assert added["data"]["fields"]["url"] == MASKED
    changed = next(e for e in events if e["type"] == "CatalogItemChanged")
    assert changed["data"]["changes"]["url"] == MASKED + "&v=***"
    streamed = _stream(system, auditor, org, len(events))
    exported = _export(settings, org)
    for text in (answer.text, streamed, exported):
        assert digest not in text and "hunter2" not in text and "sk-live-123" not in text
        assert '"secret_hash":"***"' in text and MASKED in text
    assert len(exported.splitlines()) == len(events)
    # What is stored is unchanged, so the chain still verifies.
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute(
            "SELECT convert_from(state, 'UTF8') FROM stored_events WHERE originator_id = %s",
            (endpoint["endpoint_id"],),
        ).fetchone()[0]
    assert "hunter2" in stored
    env = {**os.environ, "MECHAMENTAL_DATABASE_URL": settings.database_url}
    verified = subprocess.run(
        [*CLI, "events", "verify", "--org", org], env=env, capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_url_whose_user_info_holds_a_quote_and_a_bare_query_token_reach_no_reader(api, system, org, settings):
    # The URL validator takes `'` (RFC 3986 allows it in user info); masking text stopped at it, and left a bare
    # query token (no `=`) as it was.
    quoted = "https://bob:hunter2'x@example.com/p?k=v"
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "w"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    created = api.post(f"{base}/endpoints", json={"app_id": app, "name": "e", "url": quoted})
    assert created.status_code == 201, created.text
    changed = api.put(f"{base}/endpoints/{created.json()['endpoint_id']}", json={"url": quoted + "&TOKENXYZ"})
    assert changed.status_code == 200, changed.text
    auditor = issue_token(api, org, "auditor")
    with as_token(system, auditor) as reader:
        answer = reader.get(f"/v1/orgs/{org}/events", params={"limit": 200})
        got = reader.get(f"{base}/endpoints/{created.json()['endpoint_id']}")
    assert answer.status_code == 200
    events = answer.json()["events"]
    added = next(e for e in events if e["type"] == "CatalogItemAdded" and e["data"]["kind"] == "endpoints")
    assert added["data"]["fields"]["url"] == "https://***@example.com/p?k=***"
    update = next(e for e in events if e["type"] == "CatalogItemChanged")
    assert update["data"]["changes"]["url"] == "https://***@example.com/p?k=***&***"
    streamed = _stream(system, auditor, org, len(events))
    exported = _export(settings, org)
    for text in (answer.text, streamed, exported, got.text, created.text, changed.text):
        assert "hunter2" not in text and "TOKENXYZ" not in text and "k=v" not in text, text


def test_the_event_list_answers_its_total_on_every_page(api, org):
    created = [api.post(f"/v1/orgs/{org}/workspaces", json={"name": name}).json() for name in "abc"]
    events = f"/v1/orgs/{org}/events"
    only = {"type": "WorkspaceCreated"}  # buckets are provisioned meanwhile, each with an event of its own
    first = api.get(events, params={**only, "limit": 2}).json()
    assert set(first) == {"total", "has_more", "next_cursor", "events"}
    assert first["total"] == 3 and first["has_more"]
    second = api.get(events, params={**only, "limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["total"] == 3 and len(second["events"]) == 1 and not second["has_more"]
    assert api.get(events, params={**only, "after": first["events"][0]["position"]}).json()["total"] == 2
    assert api.get(events, params={"aggregate_id": created[0]["workspace_id"], "type": "WorkspaceCreated"}).json()[
        "total"
    ] == 1
    assert api.get(events, params={"type": "WorkspaceDeleted"}).json()["total"] == 0
    everything = api.get(events, params={"limit": 200}).json()
    assert everything["total"] >= len(everything["events"]) >= 3
    assert api.get(f"/v1/orgs/other-{org}/events").json()["total"] == 0
