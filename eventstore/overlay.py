"""A store for deciding ahead: reads come from a snapshot, else the store below; appends are kept, not written.

The scheduler decides a slot's fires before the slot comes, with the ordinary use cases, against one
snapshot of the streams they read; what they would append is taken (`take`) and written at the slot,
carrying the versions it read, so a stream that moved in between refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from eventsourcing.persistence import StoredEvent

from domain.events import Recorded
from eventstore.protocol import Append, EventStore


class Overlay:
    def __init__(self, store: EventStore, snapshot: dict[str, list[StoredEvent]]) -> None:
        self.codec = store.codec
        self._store = store
        self._snapshot = snapshot
        self._kept: Append | None = None

    def load(self, stream_id: str) -> list[StoredEvent]:
        events = self._snapshot.get(stream_id)
        return self._store.load(stream_id) if events is None else events

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        missing = [stream_id for stream_id in stream_ids if stream_id not in self._snapshot]
        below = self._store.load_many(missing) if missing else {}
        return {stream_id: self._snapshot.get(stream_id, below.get(stream_id, [])) for stream_id in stream_ids}

    def append(self, append: Append) -> list[int]:
        self._kept = append  # a decision commits once
        return [0] * len(append.events)  # no positions yet: nothing was written

    def append_together(self, appends: list[Append]) -> list[Future[list[int]]]:
        futures: list[Future[list[int]]] = []
        for append in appends:
            futures.append(Future())
            futures[-1].set_result(self.append(append))
        return futures

    def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Recorded]:
        return self._store.read(after, limit, upto=upto)

    def head(self) -> int:
        """0, like the positions `append` returns: a decision that wrote nothing must not cost a query."""
        return 0

    def close(self) -> None:
        pass

    def take(self) -> Append | None:
        """The append kept since the last take, if any."""
        kept, self._kept = self._kept, None
        return kept
