"""JetStream -> the activity table and its rollups, with the consumer's own place in the stream.

The consumer stores what JetStream delivers and, in the same transaction, the stream sequence it has stored up
to; it reads on from that sequence whatever JetStream thinks was acked (see `ActivityConsumer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime

import nats.js.api as js_api
import nats.js.errors as js_errors
import psycopg
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from activity.records import ActivityRecord
from activity.store import drop_expired, store_batch
from activity.transport import decoded, ensure_activity_stream
from pipeline.roles import lead, sleep_unless

log = logging.getLogger(__name__)


async def read_position(conn: psycopg.AsyncConnection, stream: str) -> tuple[str, int] | None:
    query = "SELECT stream_created, sequence FROM activity_stream_positions WHERE stream = %s"
    row = await (await conn.execute(query, (stream,))).fetchone()
    return (row[0], row[1]) if row else None


async def save_position(conn: psycopg.AsyncConnection, stream: str, created: str, sequence: int) -> None:
    """Records that every message of the stream up to `sequence` is stored (never moving back within one stream)."""
    await conn.execute(
        "INSERT INTO activity_stream_positions AS p (stream, stream_created, sequence) VALUES (%s, %s, %s) "
        "ON CONFLICT (stream) DO UPDATE SET sequence = CASE WHEN p.stream_created = EXCLUDED.stream_created "
        "THEN greatest(p.sequence, EXCLUDED.sequence) ELSE EXCLUDED.sequence END, "
        "stream_created = EXCLUDED.stream_created, updated_at = now()",
        (stream, created, sequence),
    )


class ActivityConsumer:
    """JetStream -> the activity table and its rollups.

    Where it stands is its own: the stream sequence up to which it has stored, written in the transaction that
    stores the records (`activity_stream_positions`, migration 0014). It (re)starts reading at that sequence + 1
    on a consumer of its own (no acks: JetStream's ack state is never what says a record is stored), so a process
    killed between a fetch and its commit leaves those messages to be read again by the next one, whatever anyone
    acked. An ack floor could not promise that: with AckPolicy.ALL the next consumer's first ack of a later message
    covered the messages the dead one had fetched and not stored, and they were never delivered again. Storing is
    idempotent by record id, so reading a message twice (the commit made, the process killed before it read on)
    costs nothing."""

    name = "activity"
    idle_check = 10.0  # seconds without messages after which the consumer is checked to still exist

    def __init__(
        self,
        pool: AsyncConnectionPool,
        nats: Callable[[], NATS | None],
        *,
        stream: str,
        prefix: str,
        retention_days: int = 90,
        linger: float = 0.2,
        busy_linger: float = 1.0,
        busy_records: int = 500,
        batch_records: int = 10_000,
    ) -> None:
        self.pool = pool
        self.nats = nats
        self.stream = stream
        self.prefix = prefix
        self.retention_days = retention_days
        self.linger = linger
        self.busy_linger = busy_linger
        self.busy_records = busy_records
        self.batch_records = batch_records
        self._known_days: set[date] = set()  # activity partitions seen to exist
        self._created = ""  # the stream's creation time, which the position is of
        self._next: int | None = None  # the stream sequence the subscription should deliver next
        self._gap = False  # a delivery skipped a sequence: read again from the stored position

    async def run(self, stop: asyncio.Event) -> None:
        # One consumer stores at a time (positions would do with more, as storing is idempotent, but each would
        # store everything).
        await lead(self.pool.conninfo, f"subscriber.{self.name}", stop, lambda _lock, stop: self._consume(stop))

    async def _consume(self, stop: asyncio.Event) -> None:
        subscription = None
        gathered: tuple[list[ActivityRecord], int | None] | None = None  # fetched, not yet stored
        next_retention = 0.0
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_retention:
                        async with self.pool.connection() as conn:
                            dropped = await drop_expired(conn, self.retention_days, datetime.now(UTC).date())
                        if dropped:
                            self._known_days.clear()
                            log.info("activity: dropped partitions past retention: %s", ", ".join(dropped))
                        next_retention = time.monotonic() + 3600
                    if gathered is None:
                        if subscription is None or self._gap:
                            await self._unsubscribe(subscription)
                            subscription = await self._subscribe()
                            if subscription is None:
                                await sleep_unless(stop, 1.0)
                                continue
                            idle_since = time.monotonic()
                        try:
                            messages = await subscription.fetch(50, timeout=1.0)
                        except TimeoutError:
                            if time.monotonic() - idle_since > self.idle_check:
                                idle_since = time.monotonic()
                                await subscription.consumer_info()  # NotFoundError when JetStream dropped it
                            continue
                        idle_since = time.monotonic()
                        gathered = await self._gather(subscription, messages)
                    records, last = gathered
                    if last is not None:
                        # Stored, with the position, before anything else is fetched, however many tries it takes
                        # (storing is idempotent by id).
                        created = self._created

                        async def advance(conn, last=last, created=created) -> None:
                            await save_position(conn, self.stream, created, last)

                        async with self.pool.connection() as conn:
                            await store_batch(conn, records, self._known_days, advance)
                    gathered = None
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - NATS or PostgreSQL trouble
                    self._known_days.clear()
                    log.info("activity consumer: %s: %s", type(error).__name__, error)
                    if gathered is None:
                        subscription = None  # a NATS failure: subscribe again, from the stored position
                    await sleep_unless(stop, 1.0)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._unsubscribe(subscription))

    async def _gather(self, subscription, messages) -> tuple[list[ActivityRecord], int | None]:
        """The records of these messages and of more that arrive within `linger` (up to `batch_records`), and
        the stream sequence of the last message (None when there was none). A transaction costs about as much for
        forty records as for four hundred (temporary tables, the COPY set-up, the commit), so storing a few flushes
        at once is most of the saving. When busy (`busy_records` in `linger`), it gathers for up to `busy_linger`:
        records of one batch share their hourly rollup rows, so the larger the batch, the smaller the rollups'
        share of what PostgreSQL spends on a record (BENCHMARKS.md, "Appendix: why the code is the way it is").
        Only messages in sequence are taken: after a skipped sequence, gathering ends and the subscription is made
        again from the stored position (`_gap`)."""
        records: list[ActivityRecord] = []
        last = None
        started = time.monotonic()
        deadline = started + self.linger
        while True:
            for message in messages:
                sequence = message.metadata.sequence.stream
                if self._next is not None and sequence < self._next:
                    continue  # delivered again: taken already
                if self._next is not None and sequence > self._next:
                    log.info("activity: expected stream sequence %d, got %d; reading again", self._next, sequence)
                    self._gap = True
                    return records, last
                try:
                    records.extend(decoded(message))
                except Exception as error:  # noqa: BLE001 - an unreadable batch is skipped, not retried forever
                    log.error("activity: skipping an unreadable batch on %s: %s: %s", getattr(message, "subject", "?"),
                              type(error).__name__, error)  # fmt: skip
                last, self._next = sequence, sequence + 1
            left = deadline - time.monotonic()
            if left <= 0 and len(records) >= self.busy_records and deadline < started + self.busy_linger:
                deadline = started + self.busy_linger
                left = deadline - time.monotonic()
            if len(records) >= self.batch_records or left <= 0:
                return records, last
            try:
                messages = await subscription.fetch(50, timeout=left)
            except TimeoutError:
                messages = []  # the deadline has passed: gathering ends, or goes on if busy
            except Exception:  # noqa: BLE001 - NATS trouble, which the next fetch meets again
                return records, last

    async def _subscribe(self):
        """A consumer of this process's own, delivering from the stored position + 1 (the stream's start for a
        stream made anew, or for a first start), acking nothing."""
        client = self.nats()
        if client is None or not client.is_connected:
            return None
        js = client.jetstream()
        await ensure_activity_stream(js, self.stream, self.prefix)
        info = await js.stream_info(self.stream)
        created = info.created.isoformat() if info.created else ""
        async with self.pool.connection() as conn:
            stored = await read_position(conn, self.stream)
            if stored is None:
                start = await self._start_of_old_consumer(js, info)
                await save_position(conn, self.stream, created, start - 1)
                with contextlib.suppress(Exception):  # replaced by the position: its ack state is not used again
                    await js.delete_consumer(self.stream, self._old_durable)
            elif stored[0] != created or stored[1] > info.state.last_seq:
                # Another stream than the one the position is of (deleted and made anew): all of it is new.
                log.warning("activity: stream %s is not the one stored up to %d; reading it from its start",
                            self.stream, stored[1])  # fmt: skip
                start = 1
                await save_position(conn, self.stream, created, 0)
            else:
                start = stored[1] + 1
        self._created, self._next, self._gap = created, None, False
        config = js_api.ConsumerConfig(
            ack_policy=js_api.AckPolicy.NONE,
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start),
            inactive_threshold=600,  # one left by a killed process goes after ten minutes
            mem_storage=True,  # no state worth a disk write: the position is in PostgreSQL
        )
        log.info("activity: reading %s from stream sequence %d", self.stream, max(1, start))
        return await js.pull_subscribe(f"{self.prefix}.activity.>", stream=self.stream, config=config)

    @property
    def _old_durable(self) -> str:
        return f"{self.prefix}_activity"  # the durable consumer of versions that kept their place by acks

    async def _start_of_old_consumer(self, js, info) -> int:
        """Where a deployment upgraded from acks reads on: after its durable consumer's ack floor, which is where
        it stood (messages past it may be stored already: storing again costs nothing). Without one, the stream's
        first message."""
        try:
            old = await js.consumer_info(self.stream, self._old_durable)
        except js_errors.NotFoundError:
            return max(1, info.state.first_seq)
        return (old.ack_floor.stream_seq if old.ack_floor else 0) + 1

    async def _unsubscribe(self, subscription) -> None:
        if subscription is None:
            return
        client = self.nats()
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await client.jetstream().delete_consumer(self.stream, subscription._consumer)
