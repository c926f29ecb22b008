"""The event store in memory: the same contract as the PostgreSQL store (`tests/test_store.py` holds both
to it), for use-case tests that need no database and for deciding ahead on a copy.

One lock stands for PostgreSQL's table lock: appends are serialised, positions are drawn in commit order,
and an append is checked and applied whole or not at all, in the order the database checks it: the
versions read, then releases and claims, then the events' (stream, version) keys. As in PostgreSQL, only a
(stream, version) that exists refuses an event: versions are not required to follow one another.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

from eventsourcing.persistence import StoredEvent

from domain.events import Recorded
from eventstore.batching import can_share
from eventstore.codec import Codec
from eventstore.protocol import Append, ClaimTaken, CommitterStopped, ConcurrencyConflict


class InMemoryEventStore:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._lock = threading.Lock()
        self._log: list[StoredEvent] = []  # position n is self._log[n - 1]
        self._streams: dict[str, dict[int, StoredEvent]] = {}
        self._claims: dict[tuple[str, str], str] = {}  # (scope, key) -> owner
        self._closed = False

    def load(self, stream_id: str) -> list[StoredEvent]:
        with self._lock:
            return self._stream(stream_id)

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        with self._lock:
            return {stream_id: self._stream(stream_id) for stream_id in stream_ids}

    def append(self, append: Append) -> list[int]:
        with self._lock:
            return self._commit([append])[0]

    def append_together(self, appends: list[Append]) -> list[Future[list[int]]]:
        futures: list[Future[list[int]]] = [Future() for _ in appends]
        with self._lock:
            if len(appends) > 1 and can_share(appends):
                try:
                    outcomes = self._commit(appends)
                except (ConcurrencyConflict, ClaimTaken):
                    pass  # one of them is refused: each on its own below, as group commit does
                else:
                    for future, positions in zip(futures, outcomes, strict=True):
                        future.set_result(positions)
                    return futures
            for append, future in zip(appends, futures, strict=True):
                try:
                    future.set_result(self._commit([append])[0])
                except Exception as error:  # noqa: BLE001 - handed to the caller, as the PostgreSQL store does
                    future.set_exception(error)
        return futures

    def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Recorded]:
        with self._lock:
            stop = len(self._log) if upto is None else min(upto, len(self._log))
            rows = self._log[max(after, 0) : max(min(stop, after + limit), 0)]
        recorded = self.codec.recorded
        return [
            recorded(position, str(e.originator_id), e.originator_version, e.topic, e.state)
            for position, e in enumerate(rows, start=max(after, 0) + 1)
        ]

    def head(self) -> int:
        return len(self._log)

    def close(self) -> None:
        self._closed = True

    def _stream(self, stream_id: str) -> list[StoredEvent]:
        stream = self._streams.get(stream_id)
        return [stream[version] for version in sorted(stream)] if stream else []

    def _version(self, stream_id: str) -> int:
        stream = self._streams.get(stream_id)
        return max(stream) if stream else 0

    def _commit(self, appends: list[Append]) -> list[list[int]]:
        """Checks the appends as one transaction, then applies them; nothing is applied if one fails."""
        if self._closed:
            raise CommitterStopped("the event store is closed")
        for append in appends:
            for stream_id, version in append.expected.items():
                if self._version(stream_id) != version:
                    raise ConcurrencyConflict(f"{stream_id} has moved since it was read at version {version}")
        claims = dict(self._claims)
        for release in (release for append in appends for release in append.releases):
            if claims.get((release.scope, release.key)) == release.owner:
                del claims[(release.scope, release.key)]
        for claim in (claim for append in appends for claim in append.claims):
            if (claim.scope, claim.key) in claims:
                raise ClaimTaken(claim.scope, claim.key)
            claims[(claim.scope, claim.key)] = claim.owner
        keys: set[tuple[str, int]] = set()
        for append in appends:
            for event in append.events:
                key = (str(event.originator_id), event.originator_version)
                if key in keys or event.originator_version in self._streams.get(key[0], ()):
                    raise ConcurrencyConflict(f"{key[0]} already has version {key[1]}")
                keys.add(key)
        self._claims = claims
        outcomes = []
        for append in appends:
            positions = []
            for event in append.events:
                self._log.append(event)
                self._streams.setdefault(str(event.originator_id), {})[event.originator_version] = event
                positions.append(len(self._log))
            outcomes.append(positions)
        return outcomes
