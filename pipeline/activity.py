"""Activity records on their way to storage, off the request path.

The publisher buffers records in memory and sends them to JetStream in batches (`Nats-Msg-Id` is
the batch's first record id plus its size, so a resend is de-duplicated); when NATS is down or slow,
or the buffer fills, it writes the batch straight to PostgreSQL instead. A record that must survive a
crash of this process (a request that changed state) is made durable before its answer leaves
(`record_durably`). Either way, storage is idempotent by record id. The consumer stores what
JetStream delivers, acking after the commit.

Batches travel deflated (`Mm-Encoding: zlib`): records of one API differ in little, and a batch shrinks
about ten times, so JetStream stores and delivers that much less. A consumer older than this cannot
read them, so the projector role is upgraded before the roles that publish.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import nats.js.api as js_api
import psycopg
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from pipeline.broker import pull_subscribe
from pipeline.roles import lead, sleep_unless
from projections import activity

log = logging.getLogger(__name__)


ENCODING = "Mm-Encoding"
MAX_BATCH_BYTES = 64 << 20  # a batch inflated past this is not ours (ours are a few MB at most)


def encoded(records: list[activity.ActivityRecord]) -> bytes:
    return zlib.compress(activity.encode_batch(records), 1)


def decoded(message) -> list[activity.ActivityRecord]:
    """The records of a message: deflated (`Mm-Encoding: zlib`) or, from an older publisher, plain JSON."""
    data = message.data
    if (getattr(message, "headers", None) or {}).get(ENCODING) == "zlib":
        inflater = zlib.decompressobj()
        data = inflater.decompress(data, MAX_BATCH_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"an activity batch inflates past {MAX_BATCH_BYTES} bytes")
        if not inflater.eof:  # cut short: its end, and its checksum, never came
            raise ValueError("an activity batch is truncated")
    return activity.decode_batch(data)


def activity_subject(prefix: str) -> str:
    # One subject for every org's records: a flush is one message whatever the orgs, and with JetStream
    # syncing every write to disk, messages (not bytes) are what it costs.
    return f"{prefix}.activity.records"


async def ensure_activity_stream(js, name: str, prefix: str) -> None:
    config = js_api.StreamConfig(
        name=name,
        subjects=[f"{prefix}.activity.>"],
        storage=js_api.StorageType.FILE,
        max_age=7 * 24 * 3600,
        duplicate_window=120,
    )
    try:
        await js.stream_info(name)
    except Exception:  # noqa: BLE001 - not there yet
        await js.add_stream(config)
        return
    await js.update_stream(config)


def refused_for_content(error: Exception) -> bool:
    """Whether the database (or the driver, encoding a value) refused what the records hold: a data exception
    (SQLSTATE class 22), a broken constraint (23), a program limit such as an index entry too large (54), or a
    value Python could not encode. Anything else (the connection, a failover to a read-only standby, a timeout,
    a lock, a missing table) may pass, and the same records are tried again later, none left out."""
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        return state[:2] in ("22", "23", "54") or (not state and isinstance(error, psycopg.DataError))
    return isinstance(error, ValueError | TypeError | OverflowError)


async def store_batch(
    conn: psycopg.AsyncConnection, records: list[activity.ActivityRecord], known_days: set[date]
) -> list[activity.ActivityRecord]:
    """Stores `records` in one transaction on `conn`; returns the records left out. A batch the database
    refuses for what a record holds (a value its types cannot take) would be refused at every retry, and
    whoever retries it would store nothing after it: so a refused batch is stored again one record at a
    time, and only the records refused alone are left out. Any other failure is raised, for a retry."""
    try:
        async with conn.transaction():
            await activity.store(conn, records, known_days)
        return []
    except Exception as error:  # noqa: BLE001 - refused for its content: find the records that are
        if not refused_for_content(error):
            raise
        known_days.clear()
        log.info("activity: a batch of %d was refused (%s: %s); storing one at a time", len(records),
                 type(error).__name__, error)  # fmt: skip
    refused = []
    for record in records:
        try:
            async with conn.transaction():
                await activity.store(conn, [record], known_days)
        except Exception as error:  # noqa: BLE001 - this record cannot be stored as it is
            if not refused_for_content(error):
                raise
            known_days.clear()
            log.error(
                "activity: record %s left out, storage refused it: %s: %s", record.id, type(error).__name__, error
            )
            refused.append(record)
    return refused


class ActivityPublisher:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        nats: Callable[[], NATS | None],
        *,
        stream: str,
        prefix: str,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        interval: float = 0.2,
        durable_timeout: float = 1.0,
    ) -> None:
        self.pool = pool
        self.nats = nats
        self.stream = stream
        self.prefix = prefix
        self.batch_size = batch_size
        self.interval = interval
        self._buffer: asyncio.Queue[activity.ActivityRecord] = asyncio.Queue(max_buffer)
        self._overflow: list[activity.ActivityRecord] = []
        self.durable_timeout = durable_timeout
        self._stream_ready = False
        self._known_days: set[date] = set()  # activity partitions seen to exist
        self.stored_directly = 0
        self._durable: list[tuple[activity.ActivityRecord, asyncio.Future]] = []
        self._durable_task: asyncio.Task | None = None
        self._jetstream_off_until = 0.0  # after a failed or slow durable publish, PostgreSQL takes them a while

    def record(self, record: activity.ActivityRecord) -> None:
        """Never blocks the request: past a full buffer, records wait to be written to PostgreSQL."""
        try:
            self._buffer.put_nowait(record)
        except asyncio.QueueFull:
            self._overflow.append(record)

    async def record_durably(self, record: activity.ActivityRecord) -> None:
        """Returns once `record` is acked by JetStream or stored in PostgreSQL, so a crash after the answer
        cannot lose it. Records that arrive while one message is on its way share the next one (a group
        commit): a burst of writes costs JetStream a message per round trip, not one per record. The wait is
        bounded (`durable_timeout` for JetStream, then a direct write); should PostgreSQL fail too, the record
        joins the buffer rather than hold the answer any longer."""
        done = asyncio.get_running_loop().create_future()
        self._durable.append((record, done))
        if self._durable_task is None or self._durable_task.done():
            self._durable_task = asyncio.create_task(self._make_durable())
        await asyncio.shield(done)

    async def _make_durable(self) -> None:
        while self._durable:
            waiting, self._durable = self._durable[: self.batch_size], self._durable[self.batch_size :]
            records = [record for record, _ in waiting]
            try:
                if not await self._publish_bounded(records) and not await self._store_once(records):
                    for record in records:
                        self.record(record)
            finally:
                for _, done in waiting:
                    if not done.done():
                        done.set_result(None)

    async def _publish_bounded(self, records: list[activity.ActivityRecord]) -> bool:
        if time.monotonic() < self._jetstream_off_until:
            return False

        async def publish() -> bool:
            return await self._publish(await self._jetstream(), records)

        try:
            published = await asyncio.wait_for(publish(), self.durable_timeout)
        except TimeoutError:
            log.info("activity: JetStream did not ack within %.1fs; storing directly", self.durable_timeout)
            self._stream_ready = False
            published = False
        if not published and self.nats() is not None:
            self._jetstream_off_until = time.monotonic() + 2.0
        return published

    async def _store_once(self, records: list[activity.ActivityRecord]) -> bool:
        try:
            async with asyncio.timeout(3 * self.durable_timeout):
                async with self.pool.connection() as conn:
                    refused = await store_batch(conn, records, self._known_days)
        except Exception as error:  # noqa: BLE001 - PostgreSQL trouble: the buffer retries them
            self._known_days.clear()
            log.warning("activity: storing %d records directly failed (%s: %s)", len(records),
                        type(error).__name__, error)  # fmt: skip
            return False
        self.stored_directly += len(records) - len(refused)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_unless(stop, self.interval)
            await self.flush()
        await self.flush()  # what is buffered at shutdown is still delivered

    async def flush(self) -> None:
        if self._overflow:
            spilled, self._overflow = self._overflow, []
            await self._store(spilled)
        while not self._buffer.empty():
            batch = [self._buffer.get_nowait() for _ in range(min(self.batch_size, self._buffer.qsize()))]
            if not await self._publish(await self._jetstream(), batch):
                await self._store(batch)

    async def _jetstream(self):
        client = self.nats()
        if client is None or not client.is_connected:
            return None
        js = client.jetstream(timeout=2)
        if not self._stream_ready:
            try:
                await ensure_activity_stream(js, self.stream, self.prefix)
            except Exception as error:  # noqa: BLE001 - fall back to PostgreSQL
                log.info("activity: stream unavailable (%s); storing directly", type(error).__name__)
                return None
            self._stream_ready = True
        return js

    async def _publish(self, js, records: list[activity.ActivityRecord]) -> bool:
        if js is None:
            return False
        try:
            await js.publish(
                activity_subject(self.prefix),
                encoded(records),
                headers={"Nats-Msg-Id": f"{records[0].id}:{len(records)}", ENCODING: "zlib"},
            )
            return True
        except Exception as error:  # noqa: BLE001 - fall back to PostgreSQL
            log.info("activity: publishing failed (%s); storing directly", type(error).__name__)
            self._stream_ready = False
            return False

    async def _store(self, records: list[activity.ActivityRecord]) -> None:
        for attempt in range(5):
            try:
                async with self.pool.connection() as conn:
                    refused = await store_batch(conn, records, self._known_days)
                self.stored_directly += len(records) - len(refused)
                return
            except Exception as error:  # noqa: BLE001 - PostgreSQL busy or restarting: retry a few times
                self._known_days.clear()
                log.warning("activity: storing %d records failed (%s)", len(records), error)
                await asyncio.sleep(0.2 * (attempt + 1))
        log.error("activity: dropped %d records after repeated storage failures", len(records))


class ActivityConsumer:
    """JetStream -> the activity table and its rollups."""

    name = "activity"

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

    async def run(self, stop: asyncio.Event) -> None:
        # One consumer stores at a time: acking a message acks every one before it (AckPolicy.ALL), so a
        # second consumer's ack could cover messages the first has not stored yet.
        await lead(self.pool.conninfo, f"subscriber.{self.name}", stop, lambda _lock, stop: self._consume(stop))

    async def _consume(self, stop: asyncio.Event) -> None:
        subscription = None
        gathered: tuple[list[activity.ActivityRecord], Any] | None = None  # fetched, not yet stored
        next_retention = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_retention:
                    async with self.pool.connection() as conn:
                        dropped = await activity.drop_expired(conn, self.retention_days, datetime.now(UTC).date())
                    if dropped:
                        self._known_days.clear()
                        log.info("activity: dropped partitions past retention: %s", ", ".join(dropped))
                    next_retention = time.monotonic() + 3600
                if gathered is None:
                    if subscription is None:
                        subscription = await self._subscribe()
                        if subscription is None:
                            await sleep_unless(stop, 1.0)
                            continue
                    try:
                        messages = await subscription.fetch(50, timeout=1.0)
                    except TimeoutError:
                        continue
                    gathered = await self._gather(subscription, messages)
                records, last = gathered
                if last is not None:  # nats-py's fetch may answer with no message at all
                    # Stored and acked before anything else is fetched, however many tries it takes (storing is
                    # idempotent by id): the next ack would cover these messages, so they would never come again.
                    async with self.pool.connection() as conn:
                        await store_batch(conn, records, self._known_days)
                    await last.ack()  # acks every message up to it (AckPolicy.ALL)
                gathered = None
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS or PostgreSQL trouble
                self._known_days.clear()
                log.info("activity consumer: %s: %s", type(error).__name__, error)
                if gathered is None:
                    subscription = None  # a NATS failure: subscribe again
                await sleep_unless(stop, 1.0)

    async def _gather(self, subscription, messages) -> tuple[list[activity.ActivityRecord], Any]:
        """The records of these messages and of more that arrive within `linger` (up to `batch_records`), and
        the last message (None when there was none). A transaction costs about as much for forty records as
        for four hundred (temporary tables, the COPY set-up, the commit), so storing a few flushes at once is
        most of the saving. When busy (`busy_records` in `linger`), it gathers for up to `busy_linger`: records
        of one batch share their hourly rollup rows, and the rollups were a third of what PostgreSQL spent on a
        record in batches of 2,000, a seventh in batches of 10,000 (five thousand workspaces read at random)."""
        records: list[activity.ActivityRecord] = []
        last = None
        started = time.monotonic()
        deadline = started + self.linger
        while True:
            for message in messages:
                try:
                    records.extend(decoded(message))
                except Exception as error:  # noqa: BLE001 - an unreadable batch is skipped, not retried forever
                    log.error("activity: skipping an unreadable batch on %s: %s: %s", getattr(message, "subject", "?"),
                              type(error).__name__, error)  # fmt: skip
                last = message
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
        client = self.nats()
        if client is None or not client.is_connected:
            return None
        js = client.jetstream()
        await ensure_activity_stream(js, self.stream, self.prefix)
        return await pull_subscribe(
            js, f"{self.prefix}.activity.>", f"{self.prefix}_activity", self.stream, ack_wait=30, max_ack_pending=10_000
        )
