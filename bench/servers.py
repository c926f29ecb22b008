"""Which ASGI server: uvicorn (httptools, uvloop; what the api role runs) against granian, each serving the
same bare Litestar handler (a constant msgspec Struct) as one process, measured in alternating rounds.

    pip install granian && python -m bench.servers [--rounds 3] [--seconds 4] [--connections 16]

Prints throughput, latency and the server's CPU per request (all its threads); on a shared two-core
machine the CPU per request is the steadier of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import msgspec
from litestar import Litestar, get

from bench import harness
from bench.load import closed_loop
from mechamental.embedded import free_port

APP = "bench.servers:make_app"  # a factory: both servers call it in their worker
REQUEST = b"GET /constant HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Constant(msgspec.Struct, frozen=True):
    status: str
    version: int


CONSTANT = Constant(status="ok", version=1)


@get("/constant")
async def constant() -> Constant:
    return CONSTANT


def make_app() -> Litestar:
    return Litestar([constant])


def commands() -> dict[str, list[str]]:
    return {
        "uvicorn": [sys.executable, "-m", "uvicorn", APP, "--port", str(free_port()), "--log-level", "warning",
                    "--no-access-log", "--http", "httptools", "--loop", "uvloop", "--factory"],
        "granian": [sys.executable, "-m", "granian", "--interface", "asgi", "--port", str(free_port()),
                    "--log-level", "warning", "--no-ws", "--workers", "1", "--factory", APP],
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (granian serves from a child process)."""
    children = [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]
    return sum(harness.process_cpu(task) for task in [pid, *children])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    servers = {}
    try:
        for name, command in commands().items():
            port = int(command[command.index("--port") + 1])
            servers[name] = (subprocess.Popen(command), port)
        for _, port in servers.values():
            harness.wait_healthy(port, path="/constant")
        totals = {name: [0, 0.0, 0.0, []] for name in servers}  # requests, seconds, cpu, latencies
        for _ in range(args.rounds):
            for name, (process, port) in servers.items():
                asyncio.run(closed_loop("127.0.0.1", port, None, args.connections, 0.5, lambda c, n: REQUEST))
                before = cpu_seconds(process.pid)
                latencies, elapsed = asyncio.run(
                    closed_loop("127.0.0.1", port, None, args.connections, args.seconds, lambda c, n: REQUEST)
                )
                total = totals[name]
                total[0] += len(latencies)
                total[1] += elapsed
                total[2] += cpu_seconds(process.pid) - before
                total[3] += latencies
        for name, (requests, seconds, cpu, latencies) in totals.items():
            harness.report(f"{name}, bare handler, {args.connections} connections", latencies, seconds)
            print(f"  {name}: {cpu / requests * 1e6:.0f} us of server CPU a request")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
