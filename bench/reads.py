"""Read throughput and latency with a million events and a million activity records: GET workspace, the
workspace list and the workspace activity search, against a bare Litestar handler returning a constant
Struct on the same server (bench/read_api.py), with activity recording on and off.

    python -m bench.reads [--seconds 6] [--connections 16] [--api-workers 1] [--events 1000000] [--keep]

Throughput is a closed loop of `--connections` keep-alive connections sending pre-built requests
(bench/load.py), as each org's viewer token, spread over the seeded workspaces. Recording on and off
alternate in blocks of two seconds on the same running API (its switch file, bench/read_api.py), so both
see the same moments of a shared machine; each gets `--seconds` in all, each block measured in steady
state (`alternating`). Latency is then measured in an
open loop paced at half the top rate, recording on, for twice `--seconds`, once the activity recorded so
far is stored. The projector role runs too, storing the activity
the API records, as in production. Seeds a database first (bench/seed.py) unless a seeded one of these
sizes exists; one seeded by this run is dropped unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg

from bench import harness, seed
from bench.load import Connection, closed_loop, paced_loop

ENDPOINTS = ("bare handler", "GET workspace", "list workspaces", "activity search")
# Searches as a console would make them: by verb, by outcome, slow requests, one user, or everything.
SEARCHES = ("", "?action=read", "?status=error", "?min_duration_ms=10", "?action=update&status=success", "?limit=20")


class Result(msgspec.Struct):
    rate: float  # requests a second, saturated
    p99: float  # seconds, saturated
    paced_p99: float = float("nan")  # seconds, paced at half the saturated rate


def reader_tokens(url: str) -> dict[str, str]:
    """Org id -> the seeded viewer token of that org."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT org_id, token_id FROM rm_tokens WHERE name = %s", (seed.READER_TOKEN,)).fetchall()
    return {org_id: f"{token_id}.{seed.reader_secret(token_id)}" for org_id, token_id in rows}


def sample_workspaces(url: str, count: int) -> list[tuple[str, str]]:
    """(org id, workspace id) of live workspaces, so bigger orgs come up more often, as their users do."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT org_id, workspace_id FROM rm_workspaces WHERE NOT deleted ORDER BY random() LIMIT %s", (count,)
        ).fetchall()


def get(path: str, token: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


def requests(endpoint: str, workspaces: list[tuple[str, str]], tokens: dict[str, str]) -> list[bytes]:
    rng = random.Random(endpoint)
    built = []
    for org_id, workspace_id in workspaces:
        base, token = f"/v1/orgs/{org_id}/workspaces", tokens[org_id]
        match endpoint:
            case "bare handler":
                built.append(get("/bench/constant", token))
            case "GET workspace":
                built.append(get(f"{base}/{workspace_id}", token))
            case "list workspaces":
                built.append(get(base, token))
            case "activity search":
                built.append(get(f"{base}/{workspace_id}/activity/search{rng.choice(SEARCHES)}", token))
    return built


def request_streams(built: list[bytes], connections: int):
    """A request picker giving each connection its own share of the requests (all of them, with fewer requests
    than connections)."""
    streams = [itertools.cycle(built[n::connections] or built) for n in range(connections)]

    def next_request(connection: Connection, number: int) -> bytes:
        return next(streams[number])

    return next_request


async def saturated(port: int, built: list[bytes], connections: int, seconds: float) -> tuple[list[float], float]:
    """The most the API serves: a closed loop, every connection always waiting on an answer."""
    return await closed_loop("127.0.0.1", port, None, connections, seconds, request_streams(built, connections))


def alternating(
    port: int, built: list[bytes], connections: int, seconds: float, switch: Path, url: str
) -> dict[bool, tuple[list[float], float]]:
    """Recording on and off in alternating blocks of two seconds, `seconds` each in all: on -> (latencies, time).
    Each block is measured in steady state: a warm-up in its mode, not counted, runs first, so that storing
    records while serving overlaps the block as it overlaps any sustained load (storing trails the requests by
    up to ACTIVITY_LAG); and what an "on" block recorded is stored before an "off" block starts."""
    results: dict[bool, tuple[list[float], float]] = {True: ([], 0.0), False: ([], 0.0)}
    blocks = max(1, round(seconds / 2))
    for recording in [True, False] * blocks:
        switch.write_text("on" if recording else "off")
        time.sleep(0.1)  # every worker has read the switch
        asyncio.run(saturated(port, built, connections, harness.ACTIVITY_LAG))
        latencies, elapsed = asyncio.run(saturated(port, built, connections, seconds / blocks))
        so_far, took = results[recording]
        results[recording] = (so_far + latencies, took + elapsed)
        if recording:
            settle(url)
    switch.write_text("on")
    return results


def settle(url: str, timeout: float = 20.0) -> None:
    """Waits until the activity the saturated loops recorded has been stored, so that storing it does not
    weigh on the paced measurement that follows."""
    deadline, last = time.monotonic() + timeout, -1
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            stored = conn.execute("SELECT count(*) FROM activity WHERE ts > now() - interval '5 minutes'").fetchone()[0]
            if stored == last:
                return
            last = stored
            time.sleep(harness.ACTIVITY_LAG)


async def paced(port: int, built: list[bytes], connections: int, rate: float, seconds: float):
    """Latency as a user sees it at a given load: requests started on a schedule (bench.load.paced_loop)."""
    return await paced_loop("127.0.0.1", port, None, connections, rate, seconds, request_streams(built, connections))


@contextlib.contextmanager
def api_with_baseline(env: dict[str, str]) -> Iterator[int]:
    """The projector and the API (with the bare handler) as processes; yields the API port."""
    with harness.Roles(env) as roles:
        roles.start("projector")
        api = subprocess.Popen([sys.executable, "-m", "bench.read_api"], env=env)
        try:
            port = int(env["MECHAMENTAL_PORT"])
            harness.wait_healthy(port)
            yield port
        finally:
            api.terminate()
            api.wait(30)


def run_all(url: str, nats_url: str, args: argparse.Namespace, workspaces, tokens) -> dict[bool, dict[str, Result]]:
    """Recording on/off -> endpoint -> its throughput and latencies."""
    switch = Path(tempfile.mkdtemp(prefix="mm-bench-")) / "recording"
    switch.write_text("on")
    env = harness.role_environment(
        url, nats_url, args.data_dir, api_workers=str(args.api_workers), bench_recording_switch=str(switch)
    )
    results: dict[bool, dict[str, Result]] = {True: {}, False: {}}
    with api_with_baseline(env) as port:
        for endpoint in ENDPOINTS:
            built = requests(endpoint, workspaces, tokens)
            asyncio.run(saturated(port, built, args.connections, 1.0))  # warm-up
            for recording, (latencies, elapsed) in alternating(
                port, built, args.connections, args.seconds, switch, url
            ).items():
                label = f"  {endpoint}, recording {'on ' if recording else 'off'}, {args.connections} connections"
                rate = harness.report(label, latencies, elapsed)
                results[recording][endpoint] = Result(rate, harness.percentile(latencies, 0.99))
            if endpoint != "bare handler":
                settle(url)
                rate = results[True][endpoint].rate
                latencies, elapsed = asyncio.run(paced(port, built, args.connections, rate / 2, 2 * args.seconds))
                harness.report(f"  {endpoint}, recording on,  paced at half that", latencies, elapsed)
                results[True][endpoint].paced_p99 = harness.percentile(latencies, 0.99)
        settle(url)  # stored while the projector runs, so that it is taken back with the rest (seed.py)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    seed.add_arguments(parser)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--api-workers", type=int, default=1, help="API processes (MECHAMENTAL_API_WORKERS)")
    parser.add_argument("--keep", action="store_true", help="keep a database this run seeds")
    args = parser.parse_args()
    with seed.seeded_database(args) as (url, nats_url, name):
        harness.migrate(harness.role_environment(url, nats_url, args.data_dir))  # a kept seed meets new DDL
        with psycopg.connect(url) as conn:
            events = conn.execute("SELECT max(position) FROM mm_event_index").fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM activity").fetchone()[0]
        print(f"database {name}: {events:,} events, {rows:,} activity records")
        workspaces, tokens = sample_workspaces(url, 5000), reader_tokens(url)
        with seed.activity_taken_back(url):
            results = run_all(url, nats_url, args, workspaces, tokens)
        summarise(results[True], results[False])


def summarise(on: dict[str, Result], off: dict[str, Result]) -> None:
    bare, workspace = on["bare handler"].rate, on["GET workspace"].rate
    print(f"\nGET workspace / bare handler = {workspace / bare:.2f}   (goal: at least 0.5; recording on)")
    for endpoint in ENDPOINTS[1:]:
        result = on[endpoint]
        p99 = result.paced_p99 * 1000
        verdict = "meets" if p99 <= 20 else "misses"
        print(
            f"{endpoint:<16} p99 {p99:6.2f} ms at half its top rate, {result.p99 * 1000:6.2f} ms at the top, "
            f"recording on   ({verdict} the goal: at most 20 ms)"
        )
    print()
    for endpoint in ENDPOINTS:
        ratio = on[endpoint].rate / off[endpoint].rate
        print(f"{endpoint:<16} throughput recording on / off = {ratio:.2f}   (goal: at least 0.9)")


if __name__ == "__main__":
    main()
