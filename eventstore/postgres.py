"""The PostgreSQL event store: the `eventsourcing` library's table and reads, our append, group commit.

The table is the `eventsourcing` library's `PostgresApplicationRecorder`'s (`stored_events`: the primary
key on (stream, version) is the optimistic concurrency, the notification id is the position), made by the
migration step that holds the library's DDL (migrations/0001); the recorder serves the thread-side reads
(a stream, the notification log, its head), through the library's connection pool. Appends do not go
through it: they need more than its insert (below), and group commit needs them on one connection of their
own (`bench/recorder.py` measures the two inserts).

Writers are serialised by a table lock so that positions (notification ids) commit in order. One
transaction per command would make that lock the bottleneck, so commands hand their appends to a
single committer thread that writes everything waiting in one transaction: one call of the
`mm_append` database function, one round trip, one fsync for the whole batch.

An append is more than events: under the same table lock it can check that streams the command
only read have not moved since (so a decision never rests on stale facts), and take or give back
uniqueness claims (an environment slug, a release version), all or nothing.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import NamedTuple, TypeVar

import psycopg
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row

from domain.events import Recorded
from eventstore.batching import can_share, merged
from eventstore.codec import Codec
from eventstore.protocol import Append, ClaimTaken, CommitterStopped, ConcurrencyConflict

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS_TABLE = "stored_events"
# `mm_append` (migrations/0001_event_store.sql): everything an append does, in one round trip.
APPEND_SQL = (
    "SELECT mm_append(%s::text[], %s::bigint[], %s::text[], %s::bytea[], %s::text[], %s::bigint[], "
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
)
STREAMS_SQL = (
    f"SELECT originator_id, originator_version, topic, state FROM {EVENTS_TABLE} "
    "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
)
_CLAIM_KEY = re.compile(r"Key \(scope, key\)=\((.*), (.*)\) already exists")


class CannotShare(Exception):
    """Appends of one batch that cannot share a commit (`eventstore.batching`); they are committed one by one."""


def datastore_from_url(url: str, *, pool_size: int = 4, max_overflow: int = 8) -> PostgresDatastore:
    params = conninfo_to_dict(url)
    datastore = PostgresDatastore(
        dbname=str(params.get("dbname", "postgres")),
        host=str(params.get("host", "127.0.0.1")),
        port=str(params.get("port", 5432)),
        user=str(params.get("user", "postgres")),
        password=str(params.get("password", "")),
        connect_timeout=3,  # also how long a command waits for a pooled connection
        pool_size=pool_size,
        max_overflow=max_overflow,
        max_waiting=1000,
        pre_ping=False,  # see _briefly_retried
        originator_id_type="text",
    )
    return datastore


class Notification(NamedTuple):
    """A row of the notification log, undecoded: its position and the stored event."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


async def read_notifications(conn: psycopg.AsyncConnection, after: int, limit: int) -> list[Notification]:
    """The log after a position, on the caller's connection and event loop (the library's reader wants a thread
    and a pooled connection of its own). The appends' table lock commits positions in order, so nothing can
    still appear below the last position read."""
    cursor = await conn.execute(
        f"SELECT notification_id, originator_id, originator_version, topic, state FROM {EVENTS_TABLE} "
        "WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
        (after, limit),
    )
    return [Notification(*row) for row in await cursor.fetchall()]


async def read_log(conn: psycopg.AsyncConnection, codec: Codec, after: int, limit: int) -> list[Recorded]:
    """`PostgresEventStore.read` on the caller's connection and event loop (the rebuild's reader): a reading
    thread's Python (decoding above all) would contend for the GIL with the event loop's."""
    recorded = codec.recorded
    return [
        recorded(n.id, n.originator_id, n.originator_version, n.topic, n.state)
        for n in await read_notifications(conn, after, limit)
    ]


async def stream_versions(conn: psycopg.AsyncConnection, stream_ids: list[str]) -> dict[str, int]:
    """The version (last event's) of each of these streams that has events; one index lookup each."""
    cursor = await conn.execute(
        f"SELECT originator_id, max(originator_version) FROM {EVENTS_TABLE} WHERE originator_id = ANY(%s) "
        "GROUP BY originator_id",
        (stream_ids,),
    )
    return dict(await cursor.fetchall())


async def read_stream(conn: psycopg.AsyncConnection, stream_id: str) -> list[StoredEvent]:
    """A stream's events in order, on the caller's connection and event loop: one walk of the primary key."""
    cursor = await conn.execute(
        f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} WHERE originator_id = %s "
        "ORDER BY originator_version",
        (stream_id,),
    )
    return [StoredEvent(stream_id, version, topic, bytes(state)) for version, topic, state in await cursor.fetchall()]


def retried_once(datastore: PostgresDatastore, read: Callable[[], T]) -> T:
    """Runs a read on the store's pool, and once more if the connection failed. The pool does not ping a
    connection before lending it (a round trip on every read); after a failure, `check` drops its broken
    connections (all of them, after a PostgreSQL restart) so the retry gets a live one. One retry only:
    while PostgreSQL is down the caller hears 503 within seconds."""
    try:
        return read()
    except (StoreOperationalError, StoreInterfaceError, psycopg.OperationalError, psycopg.InterfaceError):
        time.sleep(0.1)
        datastore.pool.check()
        return read()


def _briefly_retried(method):
    """The library retries a lost connection ten times with pauses; while PostgreSQL is down that keeps a
    request waiting for most of a minute. We retry once (`retried_once`)."""
    unwrapped = method.__wrapped__

    def call(self, *args, **kwargs):
        return retried_once(self.datastore, lambda: unwrapped(self, *args, **kwargs))

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class Recorder(PostgresApplicationRecorder):
    """The library's recorder, for the table and the reads; appends go through `mm_append`."""

    select_events = _briefly_retried(PostgresApplicationRecorder.select_events)
    select_notifications = _briefly_retried(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _briefly_retried(PostgresApplicationRecorder.max_notification_id)


class PostgresEventStore:
    """The `eventstore.EventStore` protocol on PostgreSQL (its tables: migrations/0001 and 0002)."""

    def __init__(self, datastore: PostgresDatastore, codec: Codec) -> None:
        self.datastore = datastore
        self.codec = codec
        self.recorder = Recorder(datastore, events_table_name=EVENTS_TABLE)
        params = {k: v for k, v in datastore.pool.kwargs.items() if k in ("dbname", "host", "port", "user", "password")}
        self._committer = GroupCommit(make_conninfo(datastore.pool.conninfo, **params))

    def load(self, stream_id: str) -> list[StoredEvent]:
        return list(self.recorder.select_events(stream_id))

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """Many streams in one query (the library reads one stream a call)."""
        if not stream_ids:
            return {}

        def read() -> dict[str, list[StoredEvent]]:
            streams: dict[str, list[StoredEvent]] = {stream_id: [] for stream_id in stream_ids}
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
                cursor.execute(STREAMS_SQL, (list(stream_ids),))
                for stream_id, version, topic, state in cursor.fetchall():
                    streams[stream_id].append(StoredEvent(stream_id, version, topic, bytes(state)))
            return streams

        return retried_once(self.datastore, read)

    def append(self, append: Append) -> list[int]:
        """Commits one command's append atomically; returns the positions of its events."""
        return self._committer.submit(append)

    def append_together(self, appends: list[Append]) -> list[Future[list[int]]]:
        """Commits these appends in one transaction when none stands in another's way, else each on its own (as
        group commit does); each future holds an append's positions or the error that refused it. One
        transaction takes the table lock once and commits once, instead of once per append, and nothing
        downstream wakes until all are in."""
        return self._committer.submit_together(appends)

    def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Recorded]:
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, stop=upto, inclusive_of_start=False
        )
        recorded = self.codec.recorded
        return [recorded(n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in notifications]

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        self._committer.close()
        self.datastore.close()


class GroupCommit:
    """Coalesces concurrent appends into one transaction.

    A batch that fails is retried one append at a time, so only the append that lost a race fails
    (with `ConcurrencyConflict` or `ClaimTaken`) and its neighbours still commit.
    """

    IDLE_CHECK_SECONDS = 2.0  # a connection idle this long is checked before use (PostgreSQL may have restarted)

    def __init__(self, conninfo: str, max_batch_events: int = 1000) -> None:
        self._conninfo = conninfo
        self._connection: psycopg.Connection | None = None
        self._last_used = 0.0
        self._max_batch_events = max_batch_events
        # Entries of appends to commit together (None: stop).
        self._queue: queue.SimpleQueue[list[tuple[Append, Future[list[int]]]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, append: Append) -> list[int]:
        return self.submit_together([append])[0].result()

    def submit_together(self, appends: list[Append]) -> list[Future[list[int]]]:
        """Queues the appends as one entry, so the committer takes them into one batch whatever its size."""
        entry = [(append, Future()) for append in appends]
        with self._lock:  # after close() nothing enters the queue, so nothing waits forever
            if self._closed or not self._thread.is_alive():
                raise CommitterStopped("the event store is closed")
            self._queue.put(entry)
        return [future for _, future in entry]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # never leave a command waiting on a committer that is gone
            self._disconnect()
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                for _, future in item or ():
                    if future.set_running_or_notify_cancel():  # a cancelled one has nobody waiting
                        future.set_exception(CommitterStopped("the event store is closed"))

    def _loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            batch = list(entry)
            size = sum(len(append.events) for append, _ in entry)
            while size < self._max_batch_events:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self._commit(batch)
                    return
                batch += entry
                size += sum(len(append.events) for append, _ in entry)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Append, Future[list[int]]]]) -> None:
        # An append whose caller cancelled its future before we got to it is not written; past this point its
        # future can no longer be cancelled, so setting its outcome below cannot fail.
        batch = [(append, future) for append, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        if len(batch) > 1:
            try:
                positions = self._insert([append for append, _ in batch])
            except Exception:  # noqa: BLE001 - find the culprit by committing one by one below
                log.debug("group commit of %d appends failed; committing them one by one", len(batch))
            else:
                offset = 0
                for append, future in batch:
                    future.set_result(positions[offset : offset + len(append.events)])
                    offset += len(append.events)
                return
        for append, future in batch:
            try:
                future.set_result(self._insert([append]))
            except psycopg.IntegrityError as error:
                detail = error.diag.message_detail or "" if error.diag.table_name == "mm_claims" else ""
                taken = _CLAIM_KEY.search(detail)
                future.set_exception(ClaimTaken(*taken.groups()) if taken else ConcurrencyConflict(str(error)))
            except Exception as error:  # noqa: BLE001 - handed to the waiting command (unavailable: 503)
                future.set_exception(error)

    def _insert(self, appends: list[Append]) -> list[int]:
        if not can_share(appends):
            raise CannotShare()
        append = merged(appends)
        events = append.events
        params = (
            [str(e.originator_id) for e in events],
            [e.originator_version for e in events],
            [e.topic for e in events],
            [e.state for e in events],
            list(append.expected),
            list(append.expected.values()),
            *([getattr(c, field) for c in append.claims] for field in ("scope", "key", "owner")),
            *([getattr(c, field) for c in append.releases] for field in ("scope", "key", "owner")),
        )
        connection = self._connect()
        try:
            row = connection.execute(APPEND_SQL, params).fetchone()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            # Whether a lost connection committed is unknown (see the README's known limits); the next
            # batch starts on a fresh connection.
            self._disconnect()
            raise
        self._last_used = time.monotonic()
        assert row is not None
        return list(row[0])

    def _connect(self) -> psycopg.Connection:
        """The committer's own connection, checked first when it has been idle: a connection that died
        while idle is replaced before any batch is sent on it, so a database restart costs no command."""
        connection = self._connection
        if connection is not None and time.monotonic() - self._last_used > self.IDLE_CHECK_SECONDS:
            try:
                connection.execute("SELECT 1")
            except psycopg.Error:
                self._disconnect()
                connection = None
        if connection is None or connection.closed:
            connection = self._connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3)
        return connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
