"""Rebuild views from the event store without downtime for their readers.

Each view is replayed into fresh tables in a schema of its own (`rebuild_<name>`), made by the text of
its migration steps (`migrations.ddl(name)`), recording its progress there, so an interrupted
rebuild resumes. Views rebuilt together share one pass over the
log: each batch is read once (the next one is read while this one is applied) and handed to every
view, each applying on a connection of its own at its own pace (so one view's Python runs while
another's SQL does). The fresh tables get their secondary indexes after the replay, each built in one
pass instead of entry by entry.
Then, in one transaction that holds the live projector's positions (so it pauses), the rebuild
catches up to the head of the log and the fresh tables replace the live ones. Readers see the old
views or the new ones, never a half-built one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Callable

import psycopg

import migrations
from domain.events import Recorded
from eventstore import Codec, EventStore
from eventstore.postgres import read_log
from pipeline import positions
from pipeline.roles import LeadershipTaken, leadership
from projections import cache_notices

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
    batch_size: int = 10_000,
    progress: Progress | None = None,
) -> int:
    """Replays the whole log into fresh tables of one view or a list of them (and, with `swap`, puts them
    live); returns the position they reached."""
    # In name order, the order the live projector locks their positions in, so the swap never deadlocks it.
    handlers = sorted(handlers if isinstance(handlers, list) else [handlers], key=lambda h: h.name)
    try:
        async with leadership(database_url, [f"rebuild.{handler.name}" for handler in handlers]) as conn:
            reached = await _prepare(conn, handlers)
            total = await asyncio.to_thread(store.head)
            await _replay_views(database_url, store.codec, handlers, reached, batch_size, progress, total)
            await _build_indexes(conn, handlers)
            await _analyze(conn, handlers)
            if swap:
                return await _swap(conn, store.codec, handlers, reached, batch_size)
            return min(reached.values())
    except LeadershipTaken as taken:
        name = taken.role.removeprefix("rebuild.")
        raise RebuildRunning(f"a rebuild of {name} is already running") from None


async def _replay_views(
    database_url: str, codec: Codec, handlers, reached, batch_size: int, progress, total: int
) -> None:
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as reader,
        contextlib.AsyncExitStack() as stack,
    ):
        writers = [await stack.enter_async_context(await _writer(database_url, h)) for h in handlers]
        await _replay(reader, codec, writers, handlers, reached, batch_size, progress, total)


async def _writer(database_url: str, handler) -> psycopg.AsyncConnection:
    """A view's own connection, writing to its fresh tables."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await conn.execute(f"SET search_path TO {schema_of(handler)}, public")
    # A replayed batch lost in a crash is replayed again on resume (its rows and its position commit together),
    # so its commit need not wait for the disk. The swap's commit does.
    await conn.execute("SET synchronous_commit = off")
    return conn


_SECONDARY_INDEX = re.compile(r"^CREATE INDEX IF NOT EXISTS [^;]*;[ \t]*$", re.MULTILINE)


def without_indexes(ddl: str) -> str:
    """A view's DDL without its secondary indexes. Replays look rows up by primary key only."""
    return _SECONDARY_INDEX.sub("", ddl)


async def _prepare(conn: psycopg.AsyncConnection, handlers) -> dict[str, int]:
    """Creates each view's fresh tables (if an earlier run has not); returns where each has got to."""
    for handler in handlers:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_of(handler)}")
        await conn.execute(f"SET search_path TO {schema_of(handler)}, public")
        await conn.execute(without_indexes(migrations.ddl(handler.name)))
    await conn.execute("RESET search_path")
    async with conn.transaction():
        return {handler.name: await positions.lock_position(conn, track_of(handler)) for handler in handlers}


async def _build_indexes(conn: psycopg.AsyncConnection, handlers) -> None:
    for handler in handlers:
        await conn.execute(f"SET search_path TO {schema_of(handler)}, public")
        for statement in _SECONDARY_INDEX.findall(migrations.ddl(handler.name)):
            await conn.execute(statement)
    await conn.execute("RESET search_path")


async def _analyze(conn: psycopg.AsyncConnection, handlers) -> None:
    """Gives the fresh tables their planner statistics before readers meet them. Autovacuum would analyze them
    only some time after the swap (never, on a server where it is off), and until then the planner knows their
    sizes from the indexes but nothing of the values in them."""
    for handler in handlers:
        for table in tables_of(migrations.ddl(handler.name)):
            await conn.execute(f"ANALYZE {schema_of(handler)}.{table}")


async def _replay(conn, codec: Codec, writers, handlers, reached, batch_size: int, progress, total: int) -> int:
    """Reads the log in batches on `conn` (ahead of the views) and hands every batch to every view. Each view
    applies its batches on its own connection, one transaction each with its rebuild position, at its own pace
    (a few batches behind the reader at most), so while one waits for PostgreSQL another has Python to run."""
    start = min(reached.values())
    queues: list[asyncio.Queue[list[Recorded] | None]] = [asyncio.Queue(maxsize=2) for _ in handlers]
    advanced = asyncio.Condition()  # a view committed a batch, or a task stopped
    tasks = [asyncio.create_task(_read(conn, codec, start, batch_size, queues, advanced))]
    tasks += [
        asyncio.create_task(_follow(writer, handler, reached, queue, advanced))
        for writer, handler, queue in zip(writers, handlers, queues, strict=True)
    ]
    started, reported = time.monotonic(), start

    def news(since: int) -> bool:
        failed = any(task.done() and task.exception() is not None for task in tasks)
        return failed or min(reached.values()) > since or all(task.done() for task in tasks)

    try:
        while True:  # until every task is done, reporting each advance of the slowest view
            async with advanced:
                await advanced.wait_for(functools.partial(news, reported))
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()
            if min(reached.values()) > reported:
                reported = min(reached.values())
                if progress:
                    rate = (reported - start) / max(time.monotonic() - started, 1e-6)
                    progress(reported, max(total, reported), rate)
            if all(task.done() for task in tasks):
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return min(reached.values())


async def _read(conn, codec: Codec, position: int, batch_size: int, queues, advanced: asyncio.Condition) -> None:
    try:
        while batch := await read_log(conn, codec, position, batch_size):
            position = batch[-1].position
            for queue in queues:
                await queue.put(batch)
        for queue in queues:
            await queue.put(None)
    finally:
        await _notify(advanced)


async def _follow(conn, handler, reached: dict[str, int], queue: asyncio.Queue, advanced: asyncio.Condition) -> None:
    try:
        while (batch := await queue.get()) is not None:
            if batch[-1].position <= reached[handler.name]:
                continue  # the view got this far in an earlier run
            fresh = (
                batch
                if batch[0].position > reached[handler.name]
                else [r for r in batch if r.position > reached[handler.name]]
            )
            async with conn.transaction():
                await handler.handle(conn, fresh)
                await positions.save_position(conn, track_of(handler), batch[-1].position)
            reached[handler.name] = batch[-1].position
            await _notify(advanced)
    finally:
        await _notify(advanced)


async def _notify(condition: asyncio.Condition) -> None:
    async with condition:
        condition.notify_all()


async def _apply(conn, handlers, reached: dict[str, int], batch: list[Recorded]) -> None:
    """Gives each view the events past its own position, in its own schema, inside the caller's transaction."""
    for handler in handlers:
        fresh = [r for r in batch if r.position > reached[handler.name]]
        if fresh:
            await conn.execute(f"SET LOCAL search_path TO {schema_of(handler)}, public")
            await handler.handle(conn, fresh)
    await conn.execute("SET LOCAL search_path TO public")


async def _swap(conn, codec: Codec, handlers, reached: dict[str, int], batch_size: int) -> int:
    async with conn.transaction():
        for handler in handlers:
            await positions.lock_position(conn, handler.name)  # the live projector waits here until the swap commits
        position = min(reached.values())
        while batch := await read_log(conn, codec, position, batch_size):
            await _apply(conn, handlers, reached, batch)
            position = batch[-1].position
            for handler in handlers:
                reached[handler.name] = position
        for handler in handlers:
            retired = f"retired_{handler.name}"
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {retired}")
            for table in tables_of(migrations.ddl(handler.name)):
                await conn.execute(f"DROP TABLE IF EXISTS {retired}.{table}")
                await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA {retired}")
                await conn.execute(f"ALTER TABLE {schema_of(handler)}.{table} SET SCHEMA public")
            await positions.save_position(conn, handler.name, position)
            await conn.execute("DELETE FROM mm_positions WHERE name = %s", (track_of(handler),))
            if isinstance(handler, cache_notices.CachedView):  # API processes drop what they cached of the old tables
                await cache_notices.announce(conn, handler.name, [cache_notices.EVERY_KEY])
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
