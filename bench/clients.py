"""The executor's HTTP client: CPU per call of httpx against aiohttp, posting a run's JSON to a local endpoint
that answers at once, with as many calls in flight as the executor allows (its `concurrency`, 64). A diagnostic
without a goal: it is the measurement behind the executor's choice of aiohttp (executor/http.py).

    python -m bench.clients [--calls 20000] [--in-flight 64] [--rounds 2]

The endpoint is an asyncio server in a process of its own, so its CPU is not counted. The clients alternate,
round after round, so both see the same moments of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import aiohttp
import httpx
import msgspec

from mechamental.embedded import free_port

ENDPOINT = """
import asyncio, sys

ANSWER = b'{"stages_completed": 1, "total_stages": 1}'

async def answer(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            lines = head.lower().split(b"\\r\\n")
            length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                % (len(ANSWER), ANSWER)
            )
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
BODY = {"execution_id": "exec_1", "run_id": "run_1", "action_id": "act_1", "thread_id": None, "payload": {"k": 1}}


async def in_flight(call, calls: int, concurrency: int) -> None:
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def with_httpx(url: str, calls: int, concurrency: int) -> None:
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as client:

        async def call() -> None:
            response = await client.post(url, json=BODY)
            response.json()

        await in_flight(call, calls, concurrency)


async def with_aiohttp(url: str, calls: int, concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        headers = {"Content-Type": "application/json"}

        async def call() -> None:
            async with client.post(url, data=msgspec.json.encode(BODY), headers=headers) as response:
                msgspec.json.decode(await response.read())

        await in_flight(call, calls, concurrency)


CLIENTS = {"httpx": with_httpx, "aiohttp": with_aiohttp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=64, help="calls in flight at once")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    endpoint = subprocess.Popen([sys.executable, "-c", ENDPOINT, str(port)], stdout=subprocess.PIPE)
    try:
        assert endpoint.stdout is not None and endpoint.stdout.readline().strip() == b"ready"
        url = f"http://127.0.0.1:{port}/run"
        cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
        for _ in range(args.rounds):
            for name, client in CLIENTS.items():
                started, cpu_before = time.perf_counter(), time.process_time()
                asyncio.run(client(url, args.calls, args.in_flight))
                seconds, used = time.perf_counter() - started, time.process_time() - cpu_before
                cpu[name].append(used / args.calls)
                rate, each = args.calls / seconds, used / args.calls * 1e6
                print(f"{name:<8} {rate:>8,.0f} calls/s   {each:>6,.0f} us of CPU a call", flush=True)
        best = {name: min(values) for name, values in cpu.items()}
        print(f"\nCPU a call, httpx / aiohttp = {best['httpx'] / best['aiohttp']:.1f}  ({args.in_flight} in flight)")
    finally:
        endpoint.kill()


if __name__ == "__main__":
    main()
