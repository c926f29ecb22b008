"""Rebuild a view from the event store without downtime for its readers.

The view is replayed into fresh tables in a schema of its own (`rebuild_<name>`), recording its
progress there, so an interrupted rebuild resumes. Then, in one transaction that holds the live
projector's position (so it pauses), the rebuild catches up to the head of the log and the fresh
tables replace the live ones. Readers see the old view or the new one, never a half-built one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import psycopg

from commands.store import EventStore
from pipeline import positions

Progress = Callable[[int, int, float], None]  # done, total, events per second


class RebuildRunning(Exception):
    pass


def tables_of(ddl: str) -> list[str]:
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)


async def rebuild(
    database_url: str,
    store: EventStore,
    handler,
    *,
    swap: bool = True,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> int:
    """Replays the whole log into fresh tables (and, with `swap`, puts them live); returns the position."""
    name, schema, track = handler.name, f"rebuild_{handler.name}", f"rebuild:{handler.name}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if not await positions.try_leadership(conn, f"rebuild.{name}"):
            raise RebuildRunning(f"a rebuild of {name} is already running")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET search_path TO {schema}, public")  # the handler's tables resolve to the fresh ones
        await conn.execute(handler.ddl)
        async with conn.transaction():
            position = await positions.lock_position(conn, track)
        total = await asyncio.to_thread(store.head)
        started, done = time.monotonic(), 0
        while True:
            batch = await asyncio.to_thread(store.read, position, batch_size)
            if not batch:
                break
            async with conn.transaction():
                await handler.handle(conn, batch)
                position = batch[-1].position
                await positions.save_position(conn, track, position)
            done += len(batch)
            if progress:
                progress(position, max(total, position), done / max(time.monotonic() - started, 1e-6))
        if not swap:
            return position
        async with conn.transaction():
            await positions.lock_position(conn, name)  # the live projector waits here until the swap commits
            while batch := await asyncio.to_thread(store.read, position, batch_size):
                await handler.handle(conn, batch)
                position = batch[-1].position
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS retired_{name}")
            for table in tables_of(handler.ddl):
                await conn.execute(f"DROP TABLE IF EXISTS retired_{name}.{table}")
                await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA retired_{name}")
                await conn.execute(f"ALTER TABLE {schema}.{table} SET SCHEMA public")
            await positions.save_position(conn, name, position)
            await conn.execute("DELETE FROM mm_positions WHERE name = %s", (track,))
        await conn.execute(f"DROP SCHEMA retired_{name} CASCADE")
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        return position


def progress_bar(name: str, stream) -> Progress:
    def show(position: int, head: int, rate: float) -> None:
        share = position / head if head else 1.0
        eta = (head - position) / rate if rate else 0.0
        bar = "#" * int(share * 30)
        stream.write(f"\r{name:<14} [{bar:<30}] {position}/{head} events  {rate:,.0f} ev/s  ETA {eta:,.0f}s ")
        stream.flush()

    return show
