"""Scheduled firing at scale: N enabled every-minute cron actions (`* * * * *`); every slot must fire
within 2 s of its minute, and none twice.

Runs api, relay, projector, scheduler and executor as processes; the actions call a local HTTP sink
that answers 200 at once, so runs finish and the next slot is not skipped as busy. The actions are
made through the API (32 connections). Then, for `--minutes` minute boundaries, it records when each
slot's fire was committed (the store's NOTIFY, observed by this process: an upper bound on the commit
time) and reads the event store afterwards:

- fire delay per slot: commit of ScheduledRunFired minus the slot (p50, p99, max);
- slots fired against expected (one per action and minute), slots skipped, slots fired twice;
- how long after the slot the executor had finished the slot's runs, and the views' largest lag;
- what a slot costs other writers: a workspace create every 100 ms through the API, its answer time
  within 3 s after a slot against other times.

Baseline, in the same run on the same PostgreSQL (a database of its own): the bare `eventsourcing`
library saving N single-event aggregates from 8 threads, one transaction each.

A slot less than `--warmup` seconds after the last action became visible in the actions view is
reported apart (the scheduler decides a slot's fires ahead of it, within its look-ahead; a slot the
creation of its actions races is not the steady state this measures) and is not part of the verdict.

    python -m bench.scheduler [--actions 10000] [--minutes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import multiprocessing
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import harness
from bench.harness import percentile
from bench.load import Connection
from domain.aggregates import AGGREGATES
from eventstore import Codec
from mechamental.embedded import free_port

GOAL_SECONDS = 2.0
MINUTE = timedelta(minutes=1)


# The baseline
def bare_store_seconds(database_url: str, count: int, threads: int = 8) -> float:
    """Seconds the bare `eventsourcing` library takes to save `count` new single-event aggregates, one
    transaction each, from `threads` threads."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Tick(Aggregate):
        @event("Fired")
        def __init__(self, slot: str) -> None:
            self.slot = slot

    params = conninfo_to_dict(database_url)
    app = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(params["dbname"]),
            "POSTGRES_HOST": str(params.get("host", "127.0.0.1")),
            "POSTGRES_PORT": str(params.get("port", 5432)),
            "POSTGRES_USER": str(params.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(params.get("password", "")),
            "POSTGRES_POOL_SIZE": str(threads),
        }
    )
    shares = [count // threads + (n < count % threads) for n in range(threads)]

    def save(share: int) -> None:
        for _ in range(share):
            app.save(Tick(slot="bench"))

    workers = [threading.Thread(target=save, args=(share,)) for share in shares]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


# The endpoint the actions call
def serve_sink(port: int) -> None:
    """An HTTP/1.1 endpoint (keep-alive) that answers every request 200 with an empty JSON object."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# When events were committed
class CommitWatch:
    """Watches the store's NOTIFY (sent by every append) and notes, after each, the wall time at which the
    log's head was seen: an event at position p was committed no later than the first note with head >= p."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.times: list[float] = []
        self.heads: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="commit-watch", daemon=True)

    def __enter__(self) -> CommitWatch:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        with (
            psycopg.connect(self.database_url, autocommit=True) as listener,
            psycopg.connect(self.database_url, autocommit=True) as reader,
        ):
            listener.execute("LISTEN stored_events")
            while not self._stop.is_set():
                woken = any(True for _ in listener.notifies(timeout=0.2, stop_after=1))
                while any(True for _ in listener.notifies(timeout=0, stop_after=1)):
                    pass  # several commits since the last look: one read of the head covers them
                if woken:
                    head = reader.execute("SELECT coalesce(max(notification_id), 0) FROM stored_events").fetchone()
                    self.times.append(time.time())  # after the read: never earlier than the commit
                    self.heads.append(head[0])

    def committed_at(self, position: int) -> float:
        index = bisect.bisect_left(self.heads, position)
        return self.times[index] if index < len(self.heads) else float("nan")


# What a slot costs other writers
class WriteProbe:
    """Creates a workspace through the API every `interval` seconds, in a thread of its own, noting when each
    was sent and how long its answer took: what a user's write waits while a slot's fires hold the event
    store's table lock."""

    def __init__(self, port: int, token: str, interval: float = 0.1) -> None:
        self.port, self.token, self.interval = port, token, interval
        self.samples: list[tuple[float, float]] = []  # (sent, seconds to answer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._probe()), name="write-probe", daemon=True)

    def __enter__(self) -> WriteProbe:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _probe(self) -> None:
        async with Connection("127.0.0.1", self.port, self.token) as http:
            request = http.encode("POST", "/v1/orgs/probe/workspaces", msgspec.json.encode({"name": "probe"}))
            while not self._stop.is_set():
                sent = time.time()
                response = await http.send(request)
                if response.status == 201:
                    self.samples.append((sent, time.time() - sent))
                await asyncio.sleep(max(0.0, sent + self.interval - time.time()))

    def around(self, slots: list[datetime], seconds: float) -> tuple[list[float], list[float]]:
        """Answer times of the creates sent within `seconds` after a slot, and of the others."""
        starts = [slot.timestamp() for slot in slots]
        near = [took for sent, took in self.samples if any(0 <= sent - start < seconds for start in starts)]
        return near, [took for sent, took in self.samples if not any(0 <= sent - s < seconds for s in starts)]


# Making the actions
async def make_catalog(port: int, token: str, sink_url: str | None) -> tuple[str, dict[str, str]]:
    """A workspace with an app, an endpoint (calling the sink, or the built-in echo) and a namespace; returns
    the path that creates actions there, and an every-minute action's body."""
    org = "sched-bench"
    async with Connection("127.0.0.1", port, token) as http:

        async def create(path: str, body: dict, id_field: str) -> str:
            response = await http.request("POST", path, body)
            if response.status != 201:
                raise RuntimeError(f"POST {path}: {response.status} {response.body[:300]!r}")
            return response.json()[id_field]

        workspace = await create(f"/v1/orgs/{org}/workspaces", {"name": "cron"}, "workspace_id")
        base = f"/v1/orgs/{org}/workspaces/{workspace}"
        app_id = await create(f"{base}/apps", {"name": "bot"}, "app_id")
        target = {"url": sink_url} if sink_url else {}
        endpoint = await create(f"{base}/endpoints", {"app_id": app_id, "name": "sink", **target}, "endpoint_id")
        namespace = await create(f"{base}/namespaces", {"name": "ns"}, "namespace_id")
    body = {
        "name": "every minute",
        "endpoint_id": endpoint,
        "namespace_id": namespace,
        "action_type": "scheduled",
        "schedule_type": "cron",
        "cron_expression": "* * * * *",
    }
    return f"{base}/apps/{app_id}/actions", body


async def make_actions(port: int, token: str, path: str, body: dict, count: int, connections: int = 32) -> None:
    remaining = iter(range(count))
    payload = msgspec.json.encode(body)

    async def client() -> None:
        async with Connection("127.0.0.1", port, token) as http:
            request = http.encode("POST", path, payload)
            for _ in remaining:
                response = await http.send(request)
                if response.status != 201:
                    raise RuntimeError(f"create action: {response.status} {response.body[:300]!r}")

    await asyncio.gather(*(client() for _ in range(connections)))


def make_everything(args, url: str, port: int, token: str, sink_url: str | None) -> datetime:
    """The catalog and the actions, through the API; returns when the last action became visible."""
    started = time.perf_counter()
    path, body = asyncio.run(make_catalog(port, token, sink_url))
    asyncio.run(make_actions(port, token, path, body, args.actions))
    created = time.perf_counter() - started
    wait_visible(url, args.actions)
    print(
        f"set-up: {args.actions:,} actions created through the API in {created:.1f} s "
        f"({args.actions / created:,.0f}/s), all in the actions view after {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return datetime.now(UTC)


# Waiting
def wait_visible(database_url: str, count: int, timeout: float = 600.0) -> None:
    """Until the actions view holds `count` actions (the scheduler's work list)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM rm_actions").fetchone()[0] < count:
            if time.monotonic() > deadline:
                raise TimeoutError("the actions view did not show every action")
            time.sleep(0.2)


def next_minute(after: datetime) -> datetime:
    return after.replace(second=0, microsecond=0) + MINUTE


def sleep_until(moment: datetime, database_url: str, lags: list[int]) -> None:
    """Sleeps until `moment`, sampling the slowest consumer's lag every half second."""
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        lags.append(harness.lag(database_url))
        time.sleep(min(0.5, left))


def cpu_seconds(processes: dict[str, list[subprocess.Popen]]) -> dict[str, float]:
    """CPU time (user + system) each role's processes have used so far (Linux /proc)."""
    used = {}
    for role, running in processes.items():
        used[role] = 0.0
        for process in running:
            with contextlib.suppress(OSError):
                used[role] += harness.process_cpu(process.pid)
    return used


# Reading the results
class Slot:
    def __init__(self) -> None:
        self.fire_delays: list[float] = []
        self.held_delays: list[float] = []  # of the fires decided ahead (as of the slot) and held until it came
        self.fired: Counter[str] = Counter()  # action id -> fires of this slot (more than one: fired twice)
        self.skipped = 0
        self.runs: set[str] = set()
        self.runs_done: list[float] = []  # seconds after the slot at which each run's success was committed
        self.runs_failed = 0


def read_slots(database_url: str, watch: CommitWatch) -> dict[datetime, Slot]:
    slots: dict[datetime, Slot] = defaultdict(Slot)
    run_slot: dict[str, datetime] = {}
    codec = Codec(AGGREGATES)
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, topic, state FROM stored_events WHERE topic = ANY(%s) "
            "ORDER BY notification_id",
            (["ScheduledRunFired", "ScheduledSlotSkipped", "RunSucceeded", "AttemptFailed"],),
        )
        for position, stream_id, topic, state in rows:
            meta, event = codec.decode(topic, bytes(state))
            if topic == "ScheduledRunFired":
                slot = slots[event.slot]
                slot.fired[stream_id] += 1
                delay = watch.committed_at(position) - event.slot.timestamp()
                slot.fire_delays.append(delay)
                if meta.occurred_at == event.slot:
                    slot.held_delays.append(delay)
                slot.runs.add(event.run_id)
                run_slot[event.run_id] = event.slot
            elif topic == "ScheduledSlotSkipped":
                slots[event.slot].skipped += 1
            elif stream_id in run_slot:
                moment = run_slot[stream_id]
                if topic == "RunSucceeded":
                    slots[moment].runs_done.append(watch.committed_at(position) - moment.timestamp())
                elif event.retry_at is None:
                    slots[moment].runs_failed += 1
    return slots


def print_slot(moment: datetime, slot: Slot, expected: int | None) -> bool:
    """Prints one slot's line; True when it meets the goal."""
    delays = slot.fire_delays
    twice = sum(count - 1 for count in slot.fired.values())
    fired = len(slot.fired)
    done = len(slot.runs_done) + slot.runs_failed
    print(
        f"  {moment:%H:%M}  fired {fired:>6,}/{expected or fired:,}  twice {twice}  skipped {slot.skipped:,}   "
        f"delay p50 {statistics.median(delays) if delays else float('nan'):6.3f} s  "
        f"p99 {percentile(delays, 0.99):6.3f} s  max {max(delays, default=float('nan')):6.3f} s   "
        f"runs finished {done:,}/{len(slot.runs):,}, the last {max(slot.runs_done, default=float('nan')):.1f} s "
        f"after the slot" + (f" ({slot.runs_failed} failed)" if slot.runs_failed else ""),
        flush=True,
    )
    late = len(delays) - len(slot.held_delays)
    print(
        f"         decided ahead and held {len(slot.held_delays):,} (max {max(slot.held_delays, default=0):.3f} s), "
        f"decided at the slot or later {late:,} (their previous run finished late, or the action is new)",
        flush=True,
    )
    return fired == expected and twice == 0 and bool(delays) and max(delays) <= GOAL_SECONDS


class Measured(NamedTuple):
    slots: dict[datetime, Slot]
    measured: list[datetime]  # the judged slots
    lags: list[int]
    cpu: dict[str, float]  # CPU seconds per role over the judged minutes
    probe: WriteProbe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=10_000, help="every-minute cron actions")
    parser.add_argument("--minutes", type=int, default=2, help="minute boundaries measured")
    parser.add_argument("--executors", type=int, default=1, help="executor processes")
    parser.add_argument(
        "--echo", action="store_true", help="endpoints without a URL: the executor's built-in echo, no HTTP call"
    )
    parser.add_argument("--warmup", type=float, default=35.0, help="seconds from set-up to the first measured slot")
    args = parser.parse_args()
    with harness.servers() as (server_url, nats_url), harness.scratch_database(server_url) as url:
        print(f"PostgreSQL {server_url.split('@')[-1]}, {args.actions:,} actions `* * * * *`\n", flush=True)
        with harness.scratch_database(server_url) as baseline_url:
            baseline = bare_store_seconds(baseline_url, args.actions)
        print(
            f"baseline: bare eventsourcing, {args.actions:,} single-event saves from 8 threads: {baseline:.2f} s "
            f"({args.actions / baseline:,.0f}/s)",
            flush=True,
        )
        sink_port = free_port()
        sink = multiprocessing.get_context("spawn").Process(target=serve_sink, args=(sink_port,), daemon=True)
        sink.start()
        try:
            sink_url = None if args.echo else f"http://127.0.0.1:{sink_port}/run"
            result = measure(args, url, nats_url, sink_url)
        finally:
            sink.terminate()
    report(args, result, baseline)


def measure(args, url: str, nats_url: str, sink_url: str | None) -> Measured:
    # The sink listens on this machine; and one org makes the whole load, so its share is the executor's.
    env = harness.role_environment(
        url,
        nats_url,
        Path(tempfile.mkdtemp(prefix="mm-bench-")),
        outbound_allow="127.0.0.0/8",
        executor_org_concurrency="64",
    )
    port, token = int(env["MECHAMENTAL_PORT"]), env["MECHAMENTAL_ROOT_TOKEN"]
    harness.migrate(env)
    lags: list[int] = []
    executors: list[subprocess.Popen] = []  # beyond the first, which `roles` runs
    try:
        with harness.Roles(env) as roles, CommitWatch(url) as watch:
            roles.start("api", "relay", "projector", "scheduler", "executor")
            executors += [subprocess.Popen([*harness.CLI, "executor"], env=env) for _ in range(args.executors - 1)]
            ready = make_everything(args, url, port, token, sink_url)
            first = next_minute(ready + timedelta(seconds=args.warmup))
            measured = [first + n * MINUTE for n in range(args.minutes)]
            print(f"measuring the slots {', '.join(f'{m:%H:%M}' for m in measured)} (UTC)", flush=True)
            processes = {role: [process] for role, process in roles.processes.items()}
            processes["executor"] += executors
            sleep_until(measured[0] - timedelta(seconds=5), url, lags)
            with WriteProbe(port, token) as probe:
                sleep_until(measured[0], url, lags)
                cpu_before = cpu_seconds(processes)
                sleep_until(measured[-1], url, lags)
                cpu = {role: used - cpu_before[role] for role, used in cpu_seconds(processes).items()}
                sleep_until(measured[-1] + timedelta(seconds=GOAL_SECONDS + 8), url, lags)
            roles.stop("scheduler")  # nothing fires while we count
            return Measured(read_slots(url, watch), measured, lags, cpu, probe)
    finally:
        for process in executors:
            process.terminate()
        for process in executors:
            process.wait(30)


def report(args, result: Measured, baseline: float) -> None:
    slots, measured = result.slots, result.measured
    print("\nslot   fires (actions fired / expected), fired twice, skipped as busy; commit delay after the slot")
    warmup = sorted(moment for moment in slots if moment < measured[0])
    if warmup:
        print(" warm-up (actions still being made or seen; not judged):")
        for moment in warmup:
            print_slot(moment, slots[moment], None)
    print(" measured:")
    passed = [print_slot(moment, slots.get(moment, Slot()), args.actions) for moment in measured]
    twice = sum(count - 1 for slot in slots.values() for count in slot.fired.values())
    worst = max((max(slots[m].fire_delays, default=float("nan")) for m in measured if m in slots), default=float("nan"))
    print(f"\nfired twice, any slot of the run: {twice}")
    if len(measured) > 1:
        minutes = len(measured) - 1
        print(
            f"CPU seconds per minute, {measured[0]:%H:%M} to {measured[-1]:%H:%M}: "
            + ", ".join(f"{role} {used / minutes:.1f}" for role, used in result.cpu.items())
        )
    print(f"largest consumer lag seen (relay, views, provisioner): {max(result.lags, default=0):,} events")
    near, rest = result.probe.around(measured, 3.0)
    every = f"a create every {result.probe.interval:g} s through the API"
    print(
        f"{every}: answered in p50 {statistics.median(near) * 1000:.0f} ms, max {max(near) * 1000:.0f} ms within "
        f"3 s after a slot ({len(near)}); p50 {statistics.median(rest) * 1000:.0f} ms, max {max(rest) * 1000:.0f} ms "
        f"at other times ({len(rest)})"
        if near and rest
        else f"{every}: too few answers to compare"
    )
    print(
        f"ratio worst fire delay / baseline ({args.actions:,} single-event saves, bare library) = "
        f"{worst / baseline:.2f}"
    )
    verdict = all(passed) and twice == 0
    print(f"\n{'PASS' if verdict else 'FAIL'}: every slot fires within {GOAL_SECONDS:g} s, none twice")


if __name__ == "__main__":
    main()
