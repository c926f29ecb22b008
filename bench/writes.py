"""Write throughput and latency: HTTP create-workspace at 1, 8 and 32 concurrent clients, against two
baselines measured in the same run on the same PostgreSQL:

  (a) the bare `eventsourcing` library: an Application saving a new aggregate per call, from 8 threads;
  (b) plain single-row INSERTs, one transaction each, synchronous_commit on, from 8 threads.

Also freshness: the time from a create's 2xx to the workspace being visible in its listing.

    python -m bench.writes [--seconds 5]

Uses MECHAMENTAL_BENCH_DATABASE_URL / MECHAMENTAL_BENCH_NATS_URL when set, else embedded servers
(durable: fsync on, as in production).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.load import Connection, closed_loop
from mechamental.embedded import EmbeddedNats, EmbeddedPostgres, free_port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def report(name: str, latencies: list[float], seconds: float) -> float:
    rate = len(latencies) / seconds
    print(
        f"{name:<34} {rate:>9.0f}/s   p50 {percentile(latencies, 0.5) * 1000:>7.2f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1000:>7.2f} ms"
    )
    return rate


def threads(target, count: int, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        mine = []
        work = target()
        while time.monotonic() < deadline:
            started = time.perf_counter()
            work()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(count)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, time.monotonic() - started


def bare_eventsourcing(database_url: str, seconds: float) -> float:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Workspace(Aggregate):
        @event("Created")
        def __init__(self, name: str, org_id: str, tags: list[str]) -> None:
            self.name, self.org_id, self.tags = name, org_id, tags

    params = conninfo_to_dict(database_url)
    os.environ.update(
        PERSISTENCE_MODULE="eventsourcing.postgres",
        POSTGRES_DBNAME=str(params["dbname"]),
        POSTGRES_HOST=str(params.get("host", "127.0.0.1")),
        POSTGRES_PORT=str(params.get("port", 5432)),
        POSTGRES_USER=str(params.get("user", "postgres")),
        POSTGRES_PASSWORD=str(params.get("password", "")),
        POSTGRES_POOL_SIZE="8",
        POSTGRES_MAX_OVERFLOW="8",
    )
    app = Application()

    def work():
        return lambda: app.save(Workspace(name="bench", org_id="bench", tags=["a", "b"]))

    latencies, elapsed = threads(work, 8, seconds)
    app.close()
    return report("(a) bare eventsourcing, 8 threads", latencies, elapsed)


def plain_inserts(database_url: str, seconds: float) -> float:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id text PRIMARY KEY, body bytea NOT NULL)")
    payload = os.urandom(400)

    def work():
        conn = psycopg.connect(database_url, autocommit=True)
        return lambda: conn.execute("INSERT INTO bench_rows VALUES (%s, %s)", (secrets.token_hex(16), payload))

    latencies, elapsed = threads(work, 8, seconds)
    return report("(b) plain INSERTs, 8 threads", latencies, elapsed)


async def http_creates(port: int, token: str, clients: int, seconds: float) -> tuple[list[float], float]:
    orgs = ["bench-" + secrets.token_hex(3) for _ in range(clients)]
    body = msgspec.json.encode({"name": "bench", "tags": ["a", "b"]})

    def create(connection: Connection, number: int) -> bytes:
        return connection.encode("POST", f"/v1/orgs/{orgs[number]}/workspaces", body)

    return await closed_loop("127.0.0.1", port, token, clients, seconds, create, expect=201)


async def freshness(port: int, token: str, samples: int) -> list[float]:
    """From a create's 2xx to the workspace appearing (no X-Min-Position: the raw pipeline delay)."""
    delays = []
    org = "fresh-" + secrets.token_hex(3)
    async with Connection("127.0.0.1", port, token) as http:
        for _ in range(samples):
            created = await http.request("POST", f"/v1/orgs/{org}/workspaces", {"name": "f"})
            acknowledged = time.perf_counter()
            workspace_id = created.json()["workspace_id"]
            while (await http.request("GET", f"/v1/orgs/{org}/workspaces/{workspace_id}")).status != 200:
                await asyncio.sleep(0.0005)
            delays.append(time.perf_counter() - acknowledged)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="mm-bench-"))
    servers = []
    database_url, nats_url = (
        os.environ.get("MECHAMENTAL_BENCH_DATABASE_URL"),
        os.environ.get("MECHAMENTAL_BENCH_NATS_URL"),
    )
    if not database_url:
        servers.append(EmbeddedPostgres(data, durable=True))
        servers[-1].start()
        database_url = servers[-1].url
    if not nats_url:
        servers.append(EmbeddedNats(data))
        servers[-1].start()
        nats_url = servers[-1].url
    name = "mm_bench_" + secrets.token_hex(4)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}_baseline")
    params = conninfo_to_dict(database_url)
    params["dbname"] = name
    url = make_conninfo(**params)
    params["dbname"] = f"{name}_baseline"
    baseline_url = make_conninfo(**params)
    token, port = "bench-" + secrets.token_hex(8), free_port()
    env = {
        **os.environ,
        "MECHAMENTAL_DATABASE_URL": url,
        "MECHAMENTAL_NATS_URL": nats_url,
        "MECHAMENTAL_ROOT_TOKEN": token,
        "MECHAMENTAL_PORT": str(port),
        "MECHAMENTAL_DATA_DIR": str(data),
        "MECHAMENTAL_STREAM": f"BENCH_{name}",
        "MECHAMENTAL_SUBJECT_PREFIX": f"b{name[-8:]}",
        "MECHAMENTAL_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "mechamental.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    roles = [subprocess.Popen([*cli, role], env=env) for role in ("api", "relay", "projector")]
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        print(f"PostgreSQL {database_url.split('@')[-1]}, {args.seconds:g} s per measurement\n")
        # The baselines write to a database of their own on the same server: the library's events are not
        # ours, and the relay must not meet them.
        baseline_es = bare_eventsourcing(baseline_url, args.seconds)
        plain_inserts(baseline_url, args.seconds)
        rates = {}
        for clients in (1, 8, 32):
            latencies, elapsed = asyncio.run(http_creates(port, token, clients, args.seconds))
            rates[clients] = report(f"HTTP create-workspace, {clients} clients", latencies, elapsed)
        print(f"\nratio HTTP@32 / bare eventsourcing@8 = {rates[32] / baseline_es:.2f}x  (goal: at least 2x)")
        delays = asyncio.run(freshness(port, token, 200))
        print(
            f"freshness (2xx -> visible in its view), 200 sequential creates: "
            f"p50 {statistics.median(delays) * 1000:.1f} ms, p99 {percentile(delays, 0.99) * 1000:.1f} ms "
            f"(goal: p99 at most 100 ms)"
        )
    finally:
        for process in roles:
            process.terminate()
        for process in roles:
            process.wait(15)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP DATABASE IF EXISTS {name}_baseline WITH (FORCE)")
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    main()
