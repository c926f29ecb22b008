"""The event store: the `eventsourcing` library's PostgreSQL application recorder, plus group commit.

The recorder serialises writers with a table lock so that positions (notification ids) commit in
order. One transaction per command would make that lock the bottleneck, so commands hand their
events to a single committer thread that writes everything waiting in one transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Iterable, Sequence

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

from domain.events import Recorded, decode

log = logging.getLogger(__name__)

EVENTS_TABLE = "stored_events"


class ConcurrencyConflict(Exception):
    """Another writer appended to the same stream first."""


def datastore_from_url(url: str, *, pool_size: int = 4, max_overflow: int = 8) -> PostgresDatastore:
    params = conninfo_to_dict(url)
    return PostgresDatastore(
        dbname=str(params.get("dbname", "postgres")),
        host=str(params.get("host", "127.0.0.1")),
        port=str(params.get("port", 5432)),
        user=str(params.get("user", "postgres")),
        password=str(params.get("password", "")),
        pool_size=pool_size,
        max_overflow=max_overflow,
        max_waiting=1000,
        pre_ping=True,
        originator_id_type="text",
    )


def to_recorded(position: int, stored: StoredEvent) -> Recorded:
    meta, event = decode(stored.topic, stored.state)
    return Recorded(position, str(stored.originator_id), stored.originator_version, meta, event)


class EventStore:
    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.recorder = PostgresApplicationRecorder(datastore, events_table_name=EVENTS_TABLE)
        self._committer: GroupCommit | None = None

    def create_tables(self) -> None:
        self.recorder.create_table()

    def load(self, stream_id: str) -> list[StoredEvent]:
        return list(self.recorder.select_events(stream_id))

    def append(self, events: Sequence[StoredEvent]) -> list[int]:
        """Appends one command's events atomically; returns their positions."""
        if self._committer is None:
            self._committer = GroupCommit(self.recorder)
        return self._committer.submit(events)

    def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Recorded]:
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, stop=upto, inclusive_of_start=False)
        return [to_recorded(n.id, n) for n in notifications]

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
        self.datastore.close()


class GroupCommit:
    """Coalesces concurrent appends into one transaction.

    A batch that hits a version conflict is retried one command at a time, so only the command
    that lost the race fails (with `ConcurrencyConflict`) and its neighbours still commit.
    """

    def __init__(self, recorder: PostgresApplicationRecorder, max_batch_events: int = 1000) -> None:
        self._recorder = recorder
        self._max_batch_events = max_batch_events
        self._queue: queue.SimpleQueue[tuple[Sequence[StoredEvent], Future[list[int]]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[StoredEvent]) -> list[int]:
        future: Future[list[int]] = Future()
        self._queue.put((events, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            size = len(item[0])
            while size < self._max_batch_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._commit(batch)
                    return
                batch.append(item)
                size += len(item[0])
            self._commit(batch)

    def _commit(self, batch: list[tuple[Sequence[StoredEvent], Future[list[int]]]]) -> None:
        if len(batch) > 1:
            try:
                positions = self._insert([e for events, _ in batch for e in events])
            except Exception:  # noqa: BLE001 - isolate the culprit by committing one by one below
                log.debug("group commit of %d commands failed; committing them one by one", len(batch))
            else:
                offset = 0
                for events, future in batch:
                    future.set_result(positions[offset:offset + len(events)])
                    offset += len(events)
                return
        for events, future in batch:
            try:
                future.set_result(self._insert(events))
            except IntegrityError as error:
                future.set_exception(ConcurrencyConflict(str(error)))
            except Exception as error:  # noqa: BLE001 - handed to the waiting command
                future.set_exception(error)

    def _insert(self, events: Iterable[StoredEvent]) -> list[int]:
        positions = self._recorder.insert_events(list(events))
        assert positions is not None
        return list(positions)
