"""Faults, with servers of their own: NATS stopped, the JetStream stream deleted, PostgreSQL restarted,
roles killed with -9 during writes. After each: nothing acknowledged is lost or doubled, views catch up,
and the API answers 503 in the error envelope (never a 500 or a hang) while PostgreSQL is down."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import nats
import psycopg
import pytest

import migrations
from mechamental.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from tests.support import eventually

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "mechamental.cli"]


class Cluster:
    def __init__(self, tmp_path) -> None:
        self.postgres = EmbeddedPostgres(tmp_path / "pg", durable=False)
        self.nats = EmbeddedNats(tmp_path / "nats")
        self.port = free_port()
        self.token = "faults-" + secrets.token_hex(8)
        self.logs = tmp_path
        self.roles: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MECHAMENTAL_DATABASE_URL": self.postgres.url,
            "MECHAMENTAL_NATS_URL": self.nats.url,
            "MECHAMENTAL_ROOT_TOKEN": self.token,
            "MECHAMENTAL_PORT": str(self.port),
            "MECHAMENTAL_DATA_DIR": str(self.logs),
            "MECHAMENTAL_LOG_LEVEL": "WARNING",
            "MECHAMENTAL_MIN_POSITION_TIMEOUT": "20",
            "MECHAMENTAL_EXECUTOR_TIMEOUT": "1",
        }

    def start(self, role: str) -> None:
        log = open(self.logs / f"{role}.log", "ab")
        self.roles[role] = subprocess.Popen([*CLI, role], env=self.env, stdout=log, stderr=log)

    def kill(self, role: str) -> None:
        self.roles.pop(role).send_signal(signal.SIGKILL)

    def stop(self) -> None:
        for process in self.roles.values():
            process.terminate()
        for process in self.roles.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.nats.stop()
        self.postgres.stop()


def ready(client: httpx.Client, what: str) -> None:
    eventually(
        lambda: client.get("/readyz").status_code == 200,
        timeout=30,
        interval=0.1,
        what=what,
        ignoring=(httpx.TransportError,),
    )


@pytest.fixture()
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    cluster.postgres.start()
    cluster.nats.start()
    subprocess.run([*CLI, "migrate"], env=cluster.env, check=True, capture_output=True, timeout=60)
    for role in ("api", "relay", "projector", "scheduler", "executor"):
        cluster.start(role)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{cluster.port}", timeout=30, headers={"Authorization": f"Bearer {cluster.token}"}
    )
    ready(client, "the cluster to come up")
    yield cluster, client
    client.close()
    cluster.stop()


def burst(client: httpx.Client, org: str, seconds: float) -> list[tuple[str, int]]:
    """Creates workspaces from 4 threads for `seconds`; returns what was acknowledged."""
    acknowledged: list[tuple[str, int]] = []
    deadline = time.monotonic() + seconds

    def writer() -> None:
        while time.monotonic() < deadline:
            try:
                answer = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "f"})
            except httpx.TransportError:
                time.sleep(0.05)  # pacing the load: a writer meeting an outage tries again at this rate
                continue
            if answer.status_code == 201:
                acknowledged.append((answer.json()["workspace_id"], int(answer.headers["X-Event-Position"])))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acknowledged


def listed(client: httpx.Client, org: str, position: int) -> set[str]:
    seen, cursor = set(), None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/orgs/{org}/workspaces", params=params, headers={"X-Min-Position": str(position)})
        assert page.status_code == 200, page.text
        body = page.json()
        seen |= {w["workspace_id"] for w in body["workspaces"]}
        if not body["has_more"]:
            return seen
        cursor = body["next_cursor"]


def stored_once(cluster: Cluster, ids: list[str]) -> bool:
    with psycopg.connect(cluster.postgres.url) as conn:
        rows = conn.execute(
            "SELECT originator_id, count(*) FROM stored_events WHERE topic = 'WorkspaceCreated' "
            "AND originator_id = ANY(%s) GROUP BY originator_id",
            (ids,),
        ).fetchall()
    return len(rows) == len(ids) and all(count == 1 for _, count in rows)


def test_nats_down_then_its_stream_deleted(cluster):
    cluster, client = cluster
    org = "org-" + secrets.token_hex(4)
    cluster.nats.stop()  # down in the middle of the workload
    while_down = burst(client, org, float(os.environ.get("MECHAMENTAL_FAULT_NATS_DOWN_SECONDS", "30")))
    assert while_down, "commands must not need NATS"
    cluster.nats.start()  # back on the same port and store
    after = burst(client, org, 1)

    async def delete_stream() -> None:
        client_ = await nats.connect(cluster.nats.url)
        await client_.jetstream().delete_stream("MECHAMENTAL_EVENTS")
        await client_.close()

    asyncio.run(delete_stream())  # broker data loss
    lost = burst(client, org, 2)
    acknowledged = while_down + after + lost
    newest = max(position for _, position in acknowledged)
    assert {w for w, _ in acknowledged} <= listed(client, org, newest)
    assert stored_once(cluster, [w for w, _ in acknowledged])
    views_equal_a_rebuild(cluster.postgres.url)


def test_postgres_restart_answers_503_then_recovers(cluster):
    cluster, client = cluster
    org = "org-" + secrets.token_hex(4)
    before = burst(client, org, 1)
    token = client.post(f"/v1/orgs/{org}/tokens", json={"name": "t", "role": "viewer"}).json()["token"]
    cluster.postgres.stop()
    started = time.monotonic()
    down = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "x"})
    assert down.status_code == 503 and down.json()["error"] == "SERVICE_UNAVAILABLE", down.text
    assert time.monotonic() - started < 25  # an answer, not a hang
    assert client.get(f"/v1/orgs/{org}/workspaces").status_code == 503
    cluster.postgres.start()  # same data, same port
    eventually(
        lambda: client.post(f"/v1/orgs/{org}/workspaces", json={"name": "y"}).status_code,
        until=lambda status: status == 201,
        timeout=30,
        interval=0.2,
        what="the API to recover by itself",
    )
    after = burst(client, org, 1)
    time.sleep(2.5)  # past the token cache's ttl: the next request reads the token's stream on a pooled connection
    viewer = client.get(f"/v1/orgs/{org}/workspaces", headers={"Authorization": f"Bearer {token}"})
    assert viewer.status_code == 200, viewer.text  # the pool's connections from before the restart were replaced
    acknowledged = before + after
    assert {w for w, _ in acknowledged} <= listed(client, org, max(p for _, p in acknowledged))
    views_equal_a_rebuild(cluster.postgres.url)


def make_action(client: httpx.Client, org: str, **fields) -> tuple[str, str]:
    ws = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "runs"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = client.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    ns = client.post(f"{base}/namespaces", json={"name": "n"}).json()["namespace_id"]
    endpoint = client.post(f"{base}/endpoints", json={"app_id": app, "name": "echo"}).json()["endpoint_id"]
    actions = f"{base}/apps/{app}/actions"
    made = client.post(actions, json={"name": "x", "endpoint_id": endpoint, "namespace_id": ns, **fields})
    assert made.status_code == 201, made.text
    return actions, made.json()["action_id"]


def views_equal_a_rebuild(url: str) -> None:
    from domain.aggregates import AGGREGATES
    from eventstore import Codec
    from eventstore.postgres import PostgresEventStore, datastore_from_url
    from mechamental.bootstrap import read_models
    from projections.rebuild import rebuild, tables_of

    store = PostgresEventStore(datastore_from_url(url, pool_size=1, max_overflow=1), Codec(AGGREGATES))
    try:
        names = [*(m.name for m in read_models()), "bucket_provisioner"]
        quiet_since: list[float] = []

        def quiet_for() -> float:
            """How long nothing has been written and every consumer has been at the head (0: not now)."""
            head = store.head()
            with psycopg.connect(url) as conn:
                behind = conn.execute(
                    "SELECT count(*) FROM mm_positions WHERE name = ANY(%s) AND position < %s", (names, head)
                ).fetchone()[0]
            if behind == 0 and store.head() == head:
                quiet_since[:] = quiet_since or [time.monotonic()]
                return time.monotonic() - quiet_since[0]
            quiet_since.clear()
            return 0.0

        eventually(quiet_for, until=lambda quiet: quiet > 1.0, timeout=60, interval=0.1, what="the cluster to go quiet")
        for model in read_models():
            asyncio.run(rebuild(url, store, model, swap=False))
            with psycopg.connect(url, autocommit=True) as conn:
                for table in tables_of(migrations.ddl(model.name)):
                    differing = conn.execute(
                        f"SELECT count(*) FROM ((SELECT * FROM public.{table} EXCEPT ALL SELECT * FROM "
                        f"rebuild_{model.name}.{table}) UNION ALL (SELECT * FROM rebuild_{model.name}.{table} "
                        f"EXCEPT ALL SELECT * FROM public.{table})) AS d"
                    ).fetchone()[0]
                    assert differing == 0, (model.name, table)
    finally:
        store.close()


def test_kill_9_of_each_role_during_writes(cluster):
    cluster, client = cluster
    org = "org-" + secrets.token_hex(4)
    actions, action_id = make_action(client, org)
    slot = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    _, once_id = make_action(client, org, action_type="scheduled", schedule_type="once", scheduled_at=slot.isoformat())
    runs: list[str] = []
    acknowledged = []
    for role in ("relay", "projector", "api", "scheduler", "executor", "relay", "projector", "scheduler", "executor"):
        writes: list = []
        writer = threading.Thread(target=lambda into=writes: into.extend(burst(client, org, 1.5)))
        writer.start()
        for _ in range(3):
            try:
                runs.append(client.post(f"{actions}/{action_id}/trigger", json={}).json()["run_id"])
            except (httpx.TransportError, ValueError, KeyError):
                pass  # the api may be the one being killed
        time.sleep(0.3 + secrets.randbelow(700) / 1000)  # the kill lands at a random moment of the writes
        cluster.kill(role)
        time.sleep(0.3)  # the role stays dead a while: the others meet its absence
        cluster.start(role)
        writer.join()
        acknowledged += writes
    ready(client, "the API restarted last to come up")
    newest = max(position for _, position in acknowledged)
    assert {w for w, _ in acknowledged} <= listed(client, org, newest)
    assert stored_once(cluster, [w for w, _ in acknowledged])

    def open_and_known_runs() -> tuple[int, int]:
        with psycopg.connect(cluster.postgres.url) as conn:
            return conn.execute(
                "SELECT count(*) FILTER (WHERE status IN ('pending', 'running')), count(*) FROM rm_runs "
                "WHERE run_id = ANY(%s)",
                (runs,),
            ).fetchone()

    eventually(  # no run is stuck: every triggered run finishes, also those whose executor was killed
        open_and_known_runs,
        until=lambda runs_now: runs_now == (0, len(runs)),
        timeout=60,
        interval=0.2,
        what="every triggered run to finish (open runs, known runs)",
    )
    with psycopg.connect(cluster.postgres.url) as conn:  # the once slot fired exactly once, across restarts
        fired = conn.execute(
            "SELECT count(*) FROM stored_events WHERE originator_id = %s AND topic = 'ScheduledRunFired'", (once_id,)
        ).fetchone()[0]
    assert fired == 1
    views_equal_a_rebuild(cluster.postgres.url)
