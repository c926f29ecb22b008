"""Activity records on their way to storage, off the request path.

The publisher buffers records in memory and sends them to JetStream in batches (`Nats-Msg-Id` is the batch's
first record id plus its size, so a resend is de-duplicated); when NATS is down or slow, or the buffer fills, it
writes the batch straight to PostgreSQL instead. A record that must survive a crash of this process (a request
that changed state) is made durable before its answer leaves (`record_durably`). Either way, storage is
idempotent by record id (`activity.store`), and the consumer stores what JetStream delivers
(`activity.consumer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date

from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from activity.records import ActivityRecord
from activity.store import store_batch
from activity.transport import ENCODING, activity_subject, encoded, ensure_activity_stream
from pipeline.roles import sleep_unless

log = logging.getLogger(__name__)


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
        self._buffer: asyncio.Queue[ActivityRecord] = asyncio.Queue(max_buffer)
        self._overflow: list[ActivityRecord] = []
        self.durable_timeout = durable_timeout
        self._stream_ready = False
        self._known_days: set[date] = set()  # activity partitions seen to exist
        self.stored_directly = 0
        self._durable: list[tuple[ActivityRecord, asyncio.Future]] = []
        self._durable_task: asyncio.Task | None = None
        self._jetstream_off_until = 0.0  # after a failed or slow durable publish, PostgreSQL takes them a while

    def record(self, record: ActivityRecord) -> None:
        """Never blocks the request: past a full buffer, records wait to be written to PostgreSQL."""
        try:
            self._buffer.put_nowait(record)
        except asyncio.QueueFull:
            self._overflow.append(record)

    async def record_durably(self, record: ActivityRecord) -> None:
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

    async def _publish_bounded(self, records: list[ActivityRecord]) -> bool:
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

    async def _store_once(self, records: list[ActivityRecord]) -> bool:
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

    async def _publish(self, js, records: list[ActivityRecord]) -> bool:
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

    async def _store(self, records: list[ActivityRecord]) -> None:
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
