"""Feeds a handler (a projection or a process manager) from JetStream, exactly once in effect.

Each batch is handled in one PostgreSQL transaction that also moves the handler's position, and
messages are acked only after that commit: a crash at any moment either redelivers a batch the
handler skips (its position already covers it) or replays one whose effects were rolled back.
Those transactions commit asynchronously (`synchronous_commit = off`): a database crash may forget
the last few, but a view and its position are forgotten together, so the handler simply applies
those events again; nothing is torn, and the event store itself still commits synchronously.
Every message carries the position of the event before it; when that is ahead of the handler's
position, the missing events are read from the event store first. When JetStream stays silent
while the store has moved on (NATS down, messages lost), the handler reads the store directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import nats.js.api as js_api
import psycopg
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from domain.events import Recorded
from eventstore import EventStore
from pipeline import positions
from pipeline.broker import all_events, from_message, pull_subscribe
from pipeline.roles import lead, sleep_unless
from projections import cache_notices

log = logging.getLogger(__name__)


class Handler(Protocol):
    name: str

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        """Applies events in log order, inside the transaction that records the new position."""


class Subscription:
    """One consumer feeding one handler, or a group of them (one fetch and one transaction per batch for
    all). Each handler keeps its own position, so a handler whose view was rebuilt and swapped in at a
    later position is never given an event twice."""

    def __init__(
        self,
        handler: Handler | list[Handler],
        store: EventStore,
        pool: AsyncConnectionPool,
        database_url: str,
        nats: Callable[[], NATS | None],
        *,
        stream: str,
        prefix: str,
        batch_size: int = 500,
        idle_timeout: float = 1.0,
    ) -> None:
        self.handlers = sorted(handler if isinstance(handler, list) else [handler], key=lambda h: h.name)
        self.name = self.handlers[0].name if len(self.handlers) == 1 else "views"
        # Found once: a check against a runtime Protocol inspects the object's attributes, at every call.
        self.cached = {handler.name for handler in self.handlers if isinstance(handler, cache_notices.CachedView)}
        self.store = store
        self.pool = pool
        self.database_url = database_url
        self.nats = nats
        self.stream = stream
        self.prefix = prefix
        self.batch_size = batch_size
        self.idle_timeout = idle_timeout
        self.durable = f"{prefix}_{self.name}"

    async def run(self, stop: asyncio.Event) -> None:
        await lead(self.database_url, f"subscriber.{self.name}", stop, lambda _lock, stop: self._consume(stop))

    async def _consume(self, stop: asyncio.Event) -> None:
        subscription = None
        while not stop.is_set():
            if subscription is None:
                subscription = await self._subscribe()
                if subscription is None:  # NATS unavailable: keep the view fresh from the store
                    await self.catch_up()
                    await sleep_unless(stop, self.idle_timeout)
                    continue
            try:
                messages = await subscription.fetch(self.batch_size, timeout=self.idle_timeout)
            except TimeoutError:
                await self.catch_up()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - consumer or stream gone, connection lost
                log.info("%s: fetch failed (%s); resubscribing", self.name, error)
                subscription = None
                continue
            await self.apply(self._decode(messages))
            if messages:
                await messages[-1].ack()  # acks the whole batch (AckPolicy.ALL)

    def _decode(self, messages) -> list[tuple[Recorded | None, int, int]]:
        """Messages this process cannot read (foreign, corrupt, or of an event type it does not know yet)
        are skipped, not retried forever: the next good message shows the gap and the store fills it."""
        decoded = []
        for message in messages:
            try:
                decoded.append(from_message(self.store.codec, message.headers or {}, message.data))
            except Exception as error:  # noqa: BLE001
                log.warning("%s: skipping unreadable message on %s: %r", self.name, message.subject, error)
        return decoded

    async def _subscribe(self):
        client = self.nats()
        if client is None or not client.is_connected:
            return None
        try:
            js = client.jetstream()
            return await pull_subscribe(
                js,
                all_events(self.prefix),
                self.durable,
                self.stream,
                ack_wait=30,
                max_ack_pending=20_000,
                deliver_policy=js_api.DeliverPolicy.ALL,
            )
        except Exception as error:  # noqa: BLE001
            log.info("%s: cannot subscribe yet (%s)", self.name, error)
            return None

    async def apply(self, records: list[tuple[Recorded | None, int, int]]) -> None:
        """Applies delivered events (with their position and their predecessor's), backfilling any gap.
        An event delivered without its data (too large for NATS) is read from the store like a gap."""
        async with self.pool.connection() as conn, conn.transaction():
            reached = await self._lock(conn)
            tracked = min(reached.values())
            batch: list[Recorded] = []
            for record, position, previous in records:
                if position <= tracked:
                    continue  # redelivered, or already read from the store
                if previous > tracked or record is None:
                    missing = await self._read_store(tracked, upto=position if record is None else previous)
                    batch.extend(missing)
                    log.info("%s: read %d events from the store", self.name, len(missing))
                if record is not None:
                    batch.append(record)
                tracked = position
            if batch:
                await self._hand_over(conn, reached, batch)

    async def catch_up(self) -> int:
        """Reads from the event store until this handler has seen its head; returns events applied."""
        applied = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                reached = await self._lock(conn)
                batch = await asyncio.to_thread(self.store.read, min(reached.values()), self.batch_size)
                if not batch:
                    return applied
                await self._hand_over(conn, reached, batch)
                applied += len(batch)

    async def _lock(self, conn) -> dict[str, int]:
        """Each handler's position, locked until commit. Starts the transaction's work, so it also makes
        the commit asynchronous (see the module's docstring)."""
        return await positions.lock_positions(conn, [h.name for h in self.handlers], wait_for_disk=False)

    async def _hand_over(self, conn, reached: dict[str, int], batch: list[Recorded]) -> None:
        """Gives each handler the events past its own position, and moves every position to the batch's end."""
        for handler in self.handlers:
            fresh = [r for r in batch if r.position > reached[handler.name]]
            if fresh:
                await handler.handle(conn, fresh)
                if handler.name in self.cached:
                    await cache_notices.announce(conn, handler.name, handler.cached_keys(fresh))
        end = batch[-1].position
        await positions.save_positions(conn, {name: end for name, at in reached.items() if end > at})

    async def _read_store(self, after: int, *, upto: int) -> list[Recorded]:
        events: list[Recorded] = []
        while True:
            chunk = await asyncio.to_thread(self.store.read, after, 10_000, upto=upto)
            events.extend(chunk)
            if len(chunk) < 10_000:
                return events
            after = chunk[-1].position
