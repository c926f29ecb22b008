"""A cheap HTTP/1.1 load generator: keep-alive connections over raw asyncio streams.

httpx costs more CPU per request than the API it measures; on a two-core machine that steals the
server's CPU and measures the client. This sends pre-built request bytes and reads responses by
Content-Length, which is all the benchmarks need (the API never answers with chunked bodies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec


class Response(msgspec.Struct):
    status: int
    body: bytes

    def json(self):
        return msgspec.json.decode(self.body)


class Connection:
    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_) -> None:
        assert self.writer is not None
        self.writer.close()

    def encode(self, method: str, path: str, body: bytes | None = None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n".encode() + self.auth
        if body is None:
            return head + b"\r\n"
        return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def send(self, request: bytes) -> Response:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        return Response(status, await self.reader.readexactly(length) if length else b"")

    async def request(self, method: str, path: str, body: object = None) -> Response:
        return await self.send(self.encode(method, path, None if body is None else msgspec.json.encode(body)))


async def closed_loop(
    host: str,
    port: int,
    token: str | None,
    connections: int,
    seconds: float,
    next_request: Callable[[Connection, int], bytes],
    expect: int = 200,
) -> tuple[list[float], float]:
    """`connections` clients, each sending its next request as soon as the last was answered, for
    `seconds`; returns every latency and the elapsed time. A response other than `expect` fails the run."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(number: int) -> None:
        async with Connection(host, port, token) as connection:
            while time.monotonic() < deadline:
                request = next_request(connection, number)
                started = time.perf_counter()
                response = await connection.send(request)
                latencies.append(time.perf_counter() - started)
                if response.status != expect:
                    raise RuntimeError(f"expected {expect}, got {response.status}: {response.body[:300]!r}")

    started = time.monotonic()
    await asyncio.gather(*(client(number) for number in range(connections)))
    return latencies, time.monotonic() - started


async def paced_loop(
    host: str,
    port: int,
    token: str | None,
    connections: int,
    rate: float,
    seconds: float,
    next_request: Callable[[Connection, int], bytes],
    expect: int = 200,
) -> tuple[list[float], float]:
    """An open loop: requests start on a schedule of `rate` a second, spread over `connections`, whether or
    not the server keeps up. Each latency runs from the request's scheduled start, so a server that falls
    behind shows its queue in the latencies instead of slowing the load down (no coordinated omission)."""
    latencies: list[float] = []
    interval = connections / rate
    started = time.monotonic()
    deadline = started + seconds

    async def client(number: int) -> None:
        async with Connection(host, port, token) as connection:
            scheduled = started + number * interval / connections
            while scheduled < deadline:
                await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
                response = await connection.send(next_request(connection, number))
                latencies.append(time.monotonic() - scheduled)
                if response.status != expect:
                    raise RuntimeError(f"expected {expect}, got {response.status}: {response.body[:300]!r}")
                scheduled += interval

    await asyncio.gather(*(client(number) for number in range(connections)))
    return latencies, time.monotonic() - started
