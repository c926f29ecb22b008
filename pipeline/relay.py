"""The relay: publishes the event store's notification log to JetStream, in order, at least once.

Commit first, publish after (outbox): a command is acknowledged once its events are in
PostgreSQL; the relay then publishes them with `Nats-Msg-Id` set for de-duplication, waits for
JetStream's acks, and only then records how far it got. Exactly one relay publishes at a time (an
advisory lock held on the same connection that records the position, so a relay that lost its lock
cannot record anything); the others wait and take over when it dies.

The position is recorded at most every `save_every` seconds (and once the relay is idle), and it commits
asynchronously (without waiting for the disk): a crash may forget the last few rounds, and what they
covered is published again, which the consumers' positions (and JetStream's de-duplication, within its
window) make harmless. Under steady load rounds are small, so recording every round would add a round trip
to PostgreSQL to nearly every round, and waiting for the disk would make every round, and so every event on
its way to the views, a disk flush slower (BENCHMARKS.md, "Appendix: why the code is the way it is").

After a round shorter than `batch_size` the relay waits for the store's NOTIFY rather than reading again:
a commit its read did not see notifies after that read began, so the wait ends at once for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
from nats.aio.client import Client as NATS

from eventstore import Codec
from eventstore.codec import decode_meta
from eventstore.postgres import EVENTS_TABLE, read_notifications
from pipeline import positions
from pipeline.broker import ensure_stream, to_message
from pipeline.roles import lead


class Relay:
    def __init__(
        self,
        database_url: str,
        nats: Callable[[], NATS | None],
        *,
        codec: Codec,
        stream: str,
        prefix: str,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        save_every: float = 0.1,
    ) -> None:
        self.database_url = database_url
        self.nats = nats
        self.codec = codec  # for each event's subject: the aggregate its type belongs to
        self.stream = stream
        self.prefix = prefix
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.save_every = save_every
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        await lead(self.database_url, positions.RELAY, stop, self._publish)

    async def _publish(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        """Publishes while leading, recording the position on `conn`, the connection that holds the lock."""
        await conn.execute("SET synchronous_commit = off")  # see the module's docstring
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
            saved, save_due = last, None  # save_due: when `last` is to be recorded, None when it is
            while not stop.is_set():
                last, full = await self._publish_batch(js, conn, store_id, last)
                now = time.monotonic()
                if last > saved and save_due is None:
                    save_due = now + self.save_every
                if save_due is not None and now >= save_due:
                    await positions.save_position(conn, positions.RELAY, last)
                    saved, save_due = last, None
                if not full:
                    wait = self.poll_interval
                    if save_due is not None:
                        wait = min(wait, max(0.0, save_due - now))
                    await self._wait_for_writes(listener, stop, wait)
            if last > saved:  # stopping: record what was published, so a successor starts there
                await positions.save_position(conn, positions.RELAY, last)

    async def _publish_batch(self, js, conn: psycopg.AsyncConnection, store_id: str, last: int) -> tuple[int, bool]:
        """Publishes the events after `last`, up to `batch_size`, and waits for JetStream's acks; returns the
        position reached and whether the batch was full (more may be waiting)."""
        notifications = await read_notifications(conn, last, self.batch_size)
        if not notifications:
            return last, False
        acks = []
        previous = last
        for notification in notifications:
            org_id = decode_meta(notification.state).org_id
            aggregate = self.codec.aggregate_of(notification.topic)
            subject, payload, headers = to_message(self.prefix, store_id, previous, notification, org_id, aggregate)
            acks.append(await js.publish_async(subject, payload, headers=headers))
            previous = notification.id
        try:
            await asyncio.gather(*acks)
        except Exception:
            # The stream may be gone (broker data loss); recreate it and publish this batch again.
            await ensure_stream(js, self.stream, self.prefix)
            raise
        self.published += len(notifications)
        return previous, len(notifications) == self.batch_size

    async def _wait_for_writes(self, listener: psycopg.AsyncConnection, stop: asyncio.Event, timeout: float) -> None:
        # NOTIFY wakes us at once; the timeout is the polling fallback if a notification is missed, or the
        # moment the position is due to be recorded.
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            break
