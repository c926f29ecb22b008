"""What every benchmark needs: servers, a scratch database, the roles as processes, and reporting.

Servers are the embedded ones (PostgreSQL with fsync on, as in production; NATS syncing every
write) unless MECHAMENTAL_BENCH_DATABASE_URL / MECHAMENTAL_BENCH_NATS_URL name running ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.load import Connection
from mechamental.embedded import EmbeddedNats, EmbeddedPostgres, free_port

CLI = [sys.executable, "-m", "mechamental.cli"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# The most a request's activity record trails it under load: the publisher's flush every 200 ms, the consumer's
# gathering of up to a second when busy (activity.consumer.ActivityConsumer), and storing the batch.
ACTIVITY_LAG = 2.0


def process_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) a process has used so far, from Linux's /proc; OSError once it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def report(name: str, latencies: list[float], seconds: float) -> float:
    """Prints throughput and latency percentiles; returns the throughput."""
    rate = len(latencies) / seconds
    print(
        f"{name:<44} {rate:>8.0f}/s   p50 {percentile(latencies, 0.5) * 1000:>7.2f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1000:>7.2f} ms",
        flush=True,
    )
    return rate


@contextlib.contextmanager
def servers(data_dir: Path | None = None) -> Iterator[tuple[str, str]]:
    """(PostgreSQL admin URL, NATS URL): started here, keeping data in `data_dir` (a temporary
    directory when None), unless the environment names running servers."""
    data = data_dir or Path(tempfile.mkdtemp(prefix="mm-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    started = []
    database_url = os.environ.get("MECHAMENTAL_BENCH_DATABASE_URL")
    nats_url = os.environ.get("MECHAMENTAL_BENCH_NATS_URL")
    try:
        if not database_url:
            started.append(EmbeddedPostgres(data, durable=True))
            started[-1].start()
            database_url = started[-1].url
        if not nats_url:
            started.append(EmbeddedNats(data))
            started[-1].start()
            nats_url = started[-1].url
        yield database_url, nats_url
    finally:
        for server in reversed(started):
            server.stop()


def database_url(server_url: str, name: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    return make_conninfo(**params)


def database_exists(server_url: str, name: str) -> bool:
    with psycopg.connect(server_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards."""
    name = "mm_bench_" + secrets.token_hex(4)
    try:
        yield create_database(server_url, name)
    finally:
        drop_database(server_url, name)


def role_environment(database_url: str, nats_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for the roles: this database, a stream and subjects of their own, a fresh port;
    `settings` are more MECHAMENTAL_* variables (api_workers="2" sets MECHAMENTAL_API_WORKERS)."""
    tag = secrets.token_hex(4)
    env = {
        **os.environ,
        "MECHAMENTAL_DATABASE_URL": database_url,
        "MECHAMENTAL_NATS_URL": nats_url,
        "MECHAMENTAL_ROOT_TOKEN": "bench-" + secrets.token_hex(8),
        "MECHAMENTAL_PORT": str(free_port()),
        "MECHAMENTAL_DATA_DIR": str(data_dir),
        "MECHAMENTAL_STREAM": f"BENCH_{tag}",
        "MECHAMENTAL_SUBJECT_PREFIX": f"b{tag}",
        "MECHAMENTAL_LOG_LEVEL": "WARNING",
    }
    env.update({"MECHAMENTAL_" + key.upper(): value for key, value in settings.items()})
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([*CLI, "migrate"], env=env, check=True, capture_output=True)


class Roles:
    """Roles run as processes, as in production; stopped (SIGTERM) on exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, *roles: str) -> None:
        for role in roles:
            self.processes[role] = subprocess.Popen([*CLI, role], env=self.env)
        if "api" in roles:
            wait_healthy(int(self.env["MECHAMENTAL_PORT"]))

    def stop(self, *roles: str) -> None:
        for role in roles or list(self.processes):
            self.processes[role].terminate()
        for role in roles or list(self.processes):
            self.processes.pop(role).wait(30)

    def __enter__(self) -> Roles:
        return self

    def __exit__(self, *_) -> None:
        self.stop()


def wait_healthy(port: int, timeout: float = 60.0, path: str = "/healthz") -> None:
    import asyncio

    async def healthy() -> bool:
        try:
            async with Connection("127.0.0.1", port) as http:
                return (await http.request("GET", path)).status == 200
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while not asyncio.run(healthy()):
        if time.monotonic() > deadline:
            raise TimeoutError("the API did not come up")
        time.sleep(0.1)


def head(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT coalesce(max(notification_id), 0) FROM stored_events").fetchone()[0]


def lag(database_url: str) -> int:
    """Events between the head of the log and the slowest consumer."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        head = conn.execute("SELECT coalesce(max(notification_id), 0) FROM stored_events").fetchone()[0]
        slowest = conn.execute("SELECT coalesce(min(position), 0) FROM mm_positions").fetchone()[0]
    return head - slowest


def wait_caught_up(database_url: str, timeout: float = 600.0) -> float:
    """Waits until every consumer has reached the head; returns the seconds it took from the first
    consumer's first step (so the roles' start-up, imports and all, is not counted)."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM mm_positions WHERE position > 0").fetchone():
            if time.monotonic() - started > timeout:
                raise TimeoutError("no consumer started")
            time.sleep(0.05)
    started = time.monotonic()
    while lag(database_url) > 0:
        if time.monotonic() - started > timeout:
            raise TimeoutError("the consumers did not catch up")
        time.sleep(0.2)
    return time.monotonic() - started
