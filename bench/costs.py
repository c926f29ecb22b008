"""Where the CPU goes: CPU time per operation of each process (API, projector, relay, PostgreSQL, NATS,
the load generator), read from /proc around a measured stretch of load. On a shared two-core machine
CPU per operation moves far less between runs than throughput does, so this is how the levers of
BENCHMARKS.md were weighed. PostgreSQL and NATS are counted only when they run on this machine.

    python -m bench.costs reads ["GET workspace"] [--rounds 4] [--seconds 1.5] [--discard]
    python -m bench.costs creates [--rate 150] [--seconds 8]

`reads` uses the seeded database (bench.seed) and the read benchmark's API, alternating activity
recording on and off (its switch file): the difference is what recording costs each process per request;
`--discard` adds a mode that makes every record and throws it away, which parts making from sending and storing.
`creates` paces HTTP creates through the whole system (api, relay, projector) and counts until the
pipeline has caught up, so the projector's and relay's share of each create is in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import harness, reads, seed, writes


def role_of(command: str) -> str | None:
    if "bench.read_api" in command:
        return "api"
    for role in ("api", "relay", "projector"):
        if f"mechamental.cli {role}" in command:
            return role
    if command.startswith("postgres"):
        return "postgres"
    if "nats-server" in command:
        return "nats"
    if "bench.costs" in command:
        return "load generator"
    return None


def cpu_by_process() -> dict[str, tuple[str, float]]:
    """pid -> (role, CPU seconds so far), for the processes `role_of` knows and their children (the API's
    workers are spawned interpreters whose command lines do not name the role)."""
    found, parents = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
            seconds = harness.process_cpu(pid)
        except OSError:
            continue  # gone meanwhile
        parents[pid] = parent
        found[pid] = (role_of(command), seconds)
    for pid, (role, seconds) in found.items():
        if role is None and found.get(parents[pid], (None,))[0] in ("api", "projector", "relay"):
            found[pid] = (found[parents[pid]][0], seconds)
    return {pid: (role, seconds) for pid, (role, seconds) in found.items() if role is not None}


def spent(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> Counter[str]:
    """CPU seconds by role between two readings (processes alive at both)."""
    by_role: Counter[str] = Counter()
    for pid, (role, seconds) in after.items():
        if pid in before:
            by_role[role] += seconds - before[pid][1]
    return by_role


def report(label: str, operations: int, by_role: Counter[str]) -> None:
    parts = "  ".join(f"{role} {seconds / operations * 1e6:,.0f}" for role, seconds in sorted(by_role.items()))
    total = sum(by_role.values()) / operations * 1e6
    print(f"{label}: {operations:,} operations; us of CPU each: {parts}  (all {total:,.0f})", flush=True)


def read_costs(args: argparse.Namespace) -> None:
    modes = ["on", "discard", "off"] if args.discard else ["on", "off"]
    with seed.seeded_database(args) as (url, nats_url, _):
        switch = Path(tempfile.mkdtemp(prefix="mm-bench-")) / "recording"
        switch.write_text("on")
        env = harness.role_environment(url, nats_url, args.data_dir, bench_recording_switch=str(switch))
        workspaces, tokens = reads.sample_workspaces(url, 5000), reads.reader_tokens(url)
        with seed.activity_taken_back(url), reads.api_with_baseline(env) as port:
            built = reads.requests(args.endpoint, workspaces, tokens)
            asyncio.run(reads.saturated(port, built, 16, 1.0))  # warm-up
            operations: Counter[str] = Counter()
            costs: dict[str, Counter[str]] = {mode: Counter() for mode in modes}
            for mode in modes * args.rounds:
                switch.write_text(mode)
                time.sleep(0.1)
                before = cpu_by_process()
                latencies, _ = asyncio.run(reads.saturated(port, built, 16, args.seconds))
                reads.settle(url)  # the round's records stored, and counted in its cost
                costs[mode] += spent(before, cpu_by_process())
                operations[mode] += len(latencies)
            for mode in modes:
                label = (
                    f"{args.endpoint}, recording {mode}" if mode != "discard" else f"{args.endpoint}, records discarded"
                )
                report(label, operations[mode], costs[mode])


def create_costs(args: argparse.Namespace) -> None:
    with harness.servers(args.data_dir) as (server_url, nats_url), harness.scratch_database(server_url) as url:
        env = harness.role_environment(url, nats_url, Path(tempfile.mkdtemp(prefix="mm-bench-")), api_workers="1")
        port, token = int(env["MECHAMENTAL_PORT"]), env["MECHAMENTAL_ROOT_TOKEN"]
        harness.migrate(env)
        with harness.Roles(env) as roles:
            roles.start("api", "relay", "projector")
            harness.wait_healthy(port)
            asyncio.run(writes.paced_creates(port, token, args.rate, 2))  # warm-up
            harness.wait_caught_up(url)
            before = cpu_by_process()
            creates = asyncio.run(writes.paced_creates(port, token, args.rate, args.seconds))
            harness.wait_caught_up(url)
            report(f"creates at {args.rate:g}/s, whole system", creates, spent(before, cpu_by_process()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    read = commands.add_parser("reads", help="CPU per read request, activity recording on and off")
    seed.add_arguments(read)
    read.add_argument("endpoint", nargs="?", default="GET workspace", choices=reads.ENDPOINTS)
    read.add_argument("--rounds", type=int, default=4, help="rounds of the modes, in turn")
    read.add_argument("--seconds", type=float, default=1.5, help="per round")
    read.add_argument("--discard", action="store_true", help="also a mode that makes each record and throws it away")
    create = commands.add_parser("creates", help="CPU per HTTP create, whole system")
    create.add_argument("--rate", type=float, default=150.0, help="creates a second")
    create.add_argument("--seconds", type=float, default=8.0)
    create.add_argument("--data-dir", type=Path, default=None, help="embedded servers' data (temporary)")
    args = parser.parse_args()
    if sys.platform != "linux":
        parser.error("reads CPU times from /proc: Linux only")
    if args.command == "reads":
        read_costs(args)
    else:
        create_costs(args)


if __name__ == "__main__":
    main()
