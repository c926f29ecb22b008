"""The relay: publishes the event store's notification log to JetStream, in order, at least once.

Commit first, publish after (outbox): a command is acknowledged once its events are in
PostgreSQL; the relay then publishes them with `Nats-Msg-Id` set for de-duplication, waits for
JetStream's acks, and only then records how far it got. Exactly one relay publishes at a time (an
advisory lock held on the same connection that records the position, so a relay that lost its lock
cannot record anything); the others wait and take over when it dies.

The position commits asynchronously (without waiting for the disk): a crash may forget the last few,
and what they covered is published again, which the consumers' positions (and JetStream's
de-duplication, within its window) make harmless. Waiting for the disk made every round of the relay,
and so every event on its way to the views, a disk flush slower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from nats.aio.client import Client as NATS

from commands.store import EVENTS_TABLE, read_notifications
from domain.events import decode_meta
from pipeline import positions
from pipeline.broker import ensure_stream, to_message
from pipeline.roles import sleep_unless

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        database_url: str,
        nats: Callable[[], NATS | None],
        *,
        stream: str,
        prefix: str,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
    ) -> None:
        self.database_url = database_url
        self.nats = nats
        self.stream = stream
        self.prefix = prefix
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._lead(stop)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - PostgreSQL or NATS trouble: start over
                log.warning("relay: %s: %s; retrying", type(error).__name__, error)
                await sleep_unless(stop, 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            await conn.execute("SET synchronous_commit = off")  # see the module's docstring
            while not await positions.try_leadership(conn, positions.RELAY):
                if await sleep_unless(stop, 1.0):
                    return
            log.info("relay: leading")
            store_id = await positions.store_id(conn)
            async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as listener:
                await listener.execute(f"LISTEN {EVENTS_TABLE}")
                client = self.nats()
                if client is None or not client.is_connected:
                    raise ConnectionError("NATS is not connected")
                js = client.jetstream(publish_async_max_pending=4096)
                await ensure_stream(js, self.stream, self.prefix)
                async with conn.transaction():
                    last = await positions.lock_position(conn, positions.RELAY)
                while not stop.is_set():
                    published = await self._publish_batch(js, conn, store_id, last)
                    if published == last:
                        await self._wait_for_writes(listener, stop)
                    last = published

    async def _publish_batch(self, js, conn: psycopg.AsyncConnection, store_id: str, last: int) -> int:
        notifications = await read_notifications(conn, last, self.batch_size)
        if not notifications:
            return last
        acks = []
        previous = last
        for notification in notifications:
            org_id = decode_meta(notification.state).org_id
            subject, payload, headers = to_message(self.prefix, store_id, previous, notification, org_id)
            acks.append(await js.publish_async(subject, payload, headers=headers))
            previous = notification.id
        try:
            await asyncio.gather(*acks)
        except Exception:
            # The stream may be gone (broker data loss); recreate it and publish this batch again.
            await ensure_stream(js, self.stream, self.prefix)
            raise
        await positions.save_position(conn, positions.RELAY, previous)
        self.published += len(notifications)
        return previous

    async def _wait_for_writes(self, listener: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        # NOTIFY wakes us at once; the timeout is the polling fallback if a notification is missed.
        async for _ in listener.notifies(timeout=self.poll_interval, stop_after=1):
            break
