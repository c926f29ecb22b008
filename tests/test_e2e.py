"""End to end: the roles as separate processes, driven over HTTP as a client would, with crashes."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from mechamental.embedded import free_port
from tests.conftest import process_environment
from tests.support import eventually

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "mechamental.cli"]


def wait_until(predicate, timeout: float = 30, what: str | None = None):
    """`eventually`, with the patience roles as processes need: a server still starting refuses connections."""
    return eventually(predicate, timeout=timeout, interval=0.1, what=what, ignoring=(httpx.TransportError,))


@pytest.fixture()
def role_env(server_urls, tmp_path):
    with process_environment(server_urls, tmp_path, "e2e") as env:
        yield env


class Roles:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, role: str, name: str | None = None) -> subprocess.Popen:
        name = name or role
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen([*CLI, role], env=self.env, stdout=log, stderr=log)
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def test_roles_as_processes_survive_kill_9_of_projector_and_relay(role_env, tmp_path):
    migrated = subprocess.run([*CLI, "migrate"], env=role_env, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    roles = Roles(role_env, tmp_path)
    base = f"http://127.0.0.1:{role_env['MECHAMENTAL_PORT']}"
    org = "org-" + secrets.token_hex(4)
    try:
        for role in ("api", "relay", "projector", "scheduler", "executor"):
            roles.start(role)
        roles.start("executor", name="second-executor")
        roles.start("relay", name="standby-relay")  # waits on the advisory lock until the leader dies
        client = httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {role_env['MECHAMENTAL_ROOT_TOKEN']}"}
        )
        wait_until(lambda: client.get("/readyz").status_code == 200, what="api ready")

        def create(n: int) -> list[httpx.Response]:
            answers = [client.post(f"/v1/orgs/{org}/workspaces", json={"name": f"w{i}"}) for i in range(n)]
            assert all(a.status_code == 201 for a in answers)
            return answers

        def listed(after: httpx.Response) -> set[str]:
            page = client.get(
                f"/v1/orgs/{org}/workspaces",
                params={"limit": 200},
                headers={"X-Min-Position": after.headers["X-Event-Position"]},
            )
            assert page.status_code == 200, page.text
            return {w["workspace_id"] for w in page.json()["workspaces"]}

        first = create(10)
        assert listed(first[-1]) == {a.json()["workspace_id"] for a in first}

        roles.kill("projector")
        second = create(10)
        roles.start("projector")
        roles.kill("relay")  # the standby takes over
        third = create(10)
        expected = {a.json()["workspace_id"] for a in first + second + third}
        wait_until(lambda: listed(third[-1]) == expected, timeout=60, what="every workspace listed")

        ws = third[-1].json()["workspace_id"]
        wait_until(
            lambda: client.get(f"/v1/orgs/{org}/workspaces/{ws}").json()["bucket_status"] == "ready",
            what="bucket ready",
        )

        # An action triggered through the API is executed by one of the two executor processes.
        base = f"/v1/orgs/{org}/workspaces/{ws}"
        app_id = client.post(f"{base}/apps", json={"name": "bot"}).json()["app_id"]
        namespace = client.post(f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
        endpoint = client.post(f"{base}/endpoints", json={"app_id": app_id, "name": "echo"}).json()["endpoint_id"]
        actions = f"{base}/apps/{app_id}/actions"
        action = client.post(actions, json={"name": "a", "endpoint_id": endpoint, "namespace_id": namespace}).json()
        runs = [client.post(f"{actions}/{action['action_id']}/trigger", json={}).json()["run_id"] for _ in range(6)]

        def all_succeeded() -> bool:
            listed = client.get(f"{actions}/{action['action_id']}/runs", params={"status": "success"})
            return listed.status_code == 200 and listed.json()["total"] == len(runs)

        wait_until(all_succeeded, timeout=60, what="every run executed")
        attempts = [client.get(f"{actions}/{action['action_id']}/runs/{r}").json()["attempt"] for r in runs]
        assert attempts == [1] * len(runs)  # two executors, no attempt run twice
    finally:
        roles.stop_all()


def test_kill_9_of_dev_during_a_write_burst_loses_no_acknowledged_workspace(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MECHAMENTAL_DATABASE_URL", "MECHAMENTAL_NATS_URL")}
    env.update(MECHAMENTAL_ROOT_TOKEN="dev-" + secrets.token_hex(8), MECHAMENTAL_LOG_LEVEL="WARNING")
    port = free_port()
    command = [*CLI, "dev", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {env['MECHAMENTAL_ROOT_TOKEN']}"}
    org = "org-" + secrets.token_hex(4)
    acknowledged: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            while not stop.is_set():
                try:
                    answer = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "burst"})
                except httpx.TransportError:
                    return
                if answer.status_code == 201:
                    with lock:
                        acknowledged.append((answer.json()["workspace_id"], int(answer.headers["X-Event-Position"])))

    log = open(tmp_path / "dev.log", "ab")
    dev = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200, timeout=60, what="dev ready")
        writers = [threading.Thread(target=writer) for _ in range(8)]
        for thread in writers:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 200, timeout=60, what="200 acknowledged writes")
        dev.send_signal(signal.SIGKILL)
        dev.wait()
        stop.set()
        for thread in writers:
            thread.join()

        dev = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200, timeout=90, what="dev restarted")
        newest = max(position for _, position in acknowledged)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            seen, cursor = set(), None
            while True:
                params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = client.get(
                    f"/v1/orgs/{org}/workspaces", params=params, headers={"X-Min-Position": str(newest)}
                ).json()
                seen |= {w["workspace_id"] for w in page["workspaces"]}
                if not page["has_more"]:
                    break
                cursor = page["next_cursor"]
        assert {workspace_id for workspace_id, _ in acknowledged} <= seen
    finally:
        stop.set()
        dev.terminate()
        dev.wait(30)
    # Stopping dev stops its servers: nothing it started is left running.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "data")], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""


def test_api_workers_share_the_port_and_leave_with_their_supervisor(role_env, tmp_path):
    """MECHAMENTAL_API_WORKERS=2: two processes answer on one port, each committing through its own
    committer, and a SIGTERM to the supervisor stops them all."""
    migrated = subprocess.run([*CLI, "migrate"], env=role_env, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    env = {**role_env, "MECHAMENTAL_API_WORKERS": "2"}
    log = open(tmp_path / "api.log", "ab")
    supervisor = subprocess.Popen([*CLI, "api"], env=env, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{env['MECHAMENTAL_PORT']}"
        headers = {"Authorization": f"Bearer {env['MECHAMENTAL_ROOT_TOKEN']}"}
        wait_until(lambda: httpx.get(base + "/healthz").status_code == 200, what="api workers up")
        workers = _children(supervisor.pid)
        assert len(workers) >= 2, workers  # the two workers (and multiprocessing's resource tracker)
        org = "org-" + secrets.token_hex(4)

        def create(i: int) -> str:
            # A connection of its own per request, so the kernel spreads them over the workers.
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                answer = client.post(f"/v1/orgs/{org}/workspaces", json={"name": f"w{i}"})
                assert answer.status_code == 201, answer.text
                return answer.json()["workspace_id"]

        created = {create(i) for i in range(40)}
        with psycopg.connect(env["MECHAMENTAL_DATABASE_URL"]) as conn:
            stored = conn.execute(
                "SELECT count(DISTINCT originator_id) FROM stored_events WHERE originator_id = ANY(%s)",
                (list(created),),
            ).fetchone()[0]
        assert len(created) == 40 and stored == 40

        # 32 connections made at once are all answered, and spread over both workers.
        port = int(env["MECHAMENTAL_PORT"])
        burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            for sock in burst:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert all(sock.recv(64).startswith(b"HTTP/1.1 200") for sock in burst)
            if sys.platform.startswith("linux"):
                held = sorted(len(_connections(pid, port)) for pid in workers)
                assert sum(held) == 32 and held[-2] >= 4, held  # 32/0 (one worker took the burst) fails
        finally:
            for sock in burst:
                sock.close()
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
    wait_until(lambda: not any(_alive(pid) for pid in workers), what="workers gone")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _connections(pid: int, port: int) -> set[int]:
    """The established TCP connections on local `port` that process `pid` holds (their socket inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(int(fields[9]))
    return inodes & established


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ")[1][0] != "Z"
