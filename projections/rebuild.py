"""Rebuild views from the event store without downtime for their readers.

Each view is replayed into fresh tables in a schema of its own (`rebuild_<name>`), recording its
progress there, so an interrupted rebuild resumes. Views rebuilt together share one pass over the
log: each batch is read once (the next one is read while this one is applied) and handed to every
view in one transaction. Then, in one transaction that holds the live projector's positions (so it
pauses), the rebuild catches up to the head of the log and the fresh tables replace the live ones.
Readers see the old views or the new ones, never a half-built one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import psycopg

from commands.store import EventStore
from domain.events import Recorded
from pipeline import positions

Progress = Callable[[int, int, float], None]  # done, total, events per second


class RebuildRunning(Exception):
    pass


def tables_of(ddl: str) -> list[str]:
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)


def schema_of(handler) -> str:
    return f"rebuild_{handler.name}"


def track_of(handler) -> str:
    return f"rebuild:{handler.name}"


async def rebuild(
    database_url: str,
    store: EventStore,
    handlers,
    *,
    swap: bool = True,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> int:
    """Replays the whole log into fresh tables of one view or a list of them (and, with `swap`, puts them
    live); returns the position they reached."""
    # In name order, the order the live projector locks their positions in, so the swap never deadlocks it.
    handlers = sorted(handlers if isinstance(handlers, list) else [handlers], key=lambda h: h.name)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for handler in handlers:
            if not await positions.try_leadership(conn, f"rebuild.{handler.name}"):
                raise RebuildRunning(f"a rebuild of {handler.name} is already running")
        reached = await _prepare(conn, handlers)
        # A replayed batch lost in a crash is replayed again on resume (its rows and its position commit
        # together), so its commit need not wait for the disk. The swap's commit does.
        await conn.execute("SET synchronous_commit = off")
        position = await _replay(conn, store, handlers, reached, batch_size, progress)
        await conn.execute("SET synchronous_commit = on")
        if swap:
            position = await _swap(conn, store, handlers, reached, batch_size)
        return position


async def _prepare(conn: psycopg.AsyncConnection, handlers) -> dict[str, int]:
    """Creates each view's fresh tables (if an earlier run has not); returns where each has got to."""
    for handler in handlers:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_of(handler)}")
        await conn.execute(f"SET search_path TO {schema_of(handler)}, public")
        await conn.execute(handler.ddl)
    await conn.execute("RESET search_path")
    async with conn.transaction():
        return {handler.name: await positions.lock_position(conn, track_of(handler)) for handler in handlers}


async def _replay(conn, store: EventStore, handlers, reached: dict[str, int], batch_size: int, progress) -> int:
    position = min(reached.values())
    total = await asyncio.to_thread(store.head)
    started, done = time.monotonic(), 0
    reading = asyncio.ensure_future(asyncio.to_thread(store.read, position, batch_size))
    while batch := await reading:
        position = batch[-1].position
        reading = asyncio.ensure_future(asyncio.to_thread(store.read, position, batch_size))
        try:
            async with conn.transaction():
                await _apply(conn, handlers, reached, batch)
                for handler in handlers:
                    await positions.save_position(conn, track_of(handler), position)
        except BaseException:
            await asyncio.gather(reading, return_exceptions=True)  # no read left running behind an error
            raise
        for handler in handlers:
            reached[handler.name] = position
        done += len(batch)
        if progress:
            progress(position, max(total, position), done / max(time.monotonic() - started, 1e-6))
    return position


async def _apply(conn, handlers, reached: dict[str, int], batch: list[Recorded]) -> None:
    """Gives each view the events past its own position, in its own schema, inside the caller's transaction."""
    for handler in handlers:
        fresh = [r for r in batch if r.position > reached[handler.name]]
        if fresh:
            await conn.execute(f"SET LOCAL search_path TO {schema_of(handler)}, public")
            await handler.handle(conn, fresh)
    await conn.execute("SET LOCAL search_path TO public")


async def _swap(conn, store: EventStore, handlers, reached: dict[str, int], batch_size: int) -> int:
    async with conn.transaction():
        for handler in handlers:
            await positions.lock_position(conn, handler.name)  # the live projector waits here until the swap commits
        position = min(reached.values())
        while batch := await asyncio.to_thread(store.read, position, batch_size):
            await _apply(conn, handlers, reached, batch)
            position = batch[-1].position
            for handler in handlers:
                reached[handler.name] = position
        for handler in handlers:
            retired = f"retired_{handler.name}"
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {retired}")
            for table in tables_of(handler.ddl):
                await conn.execute(f"DROP TABLE IF EXISTS {retired}.{table}")
                await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA {retired}")
                await conn.execute(f"ALTER TABLE {schema_of(handler)}.{table} SET SCHEMA public")
            await positions.save_position(conn, handler.name, position)
            await conn.execute("DELETE FROM mm_positions WHERE name = %s", (track_of(handler),))
    for handler in handlers:
        await conn.execute(f"DROP SCHEMA retired_{handler.name} CASCADE")
        await conn.execute(f"DROP SCHEMA {schema_of(handler)} CASCADE")
    return position


def progress_bar(name: str, stream) -> Progress:
    def show(position: int, head: int, rate: float) -> None:
        share = position / head if head else 1.0
        eta = (head - position) / rate if rate else 0.0
        bar = "#" * int(share * 30)
        stream.write(f"\r{name:<14} [{bar:<30}] {position}/{head} events  {rate:,.0f} ev/s  ETA {eta:,.0f}s ")
        stream.flush()

    return show
