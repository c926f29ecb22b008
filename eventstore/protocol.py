"""What every event store offers (the `EventStore` protocol), and what an append is.

Streams are identified by id and versioned from 1; the log gives every event a position, increasing in
commit order, so a reader that has seen position N has seen everything below it. An append is all or
nothing: its events, the versions of the streams its decision only read (none may have moved), and the
uniqueness claims it takes or gives back.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

import msgspec
from eventsourcing.persistence import StoredEvent

from domain.events import Recorded
from eventstore.codec import Codec


class Claim(msgspec.Struct, frozen=True):
    """A unique (scope, key), e.g. ("release-version:app_1", "1.2.0"), held by the stream `owner`."""

    scope: str
    key: str
    owner: str


class Append(msgspec.Struct, frozen=True):
    events: Sequence[StoredEvent]
    expected: dict[str, int] = {}  # streams only read, by the version the decision saw
    claims: Sequence[Claim] = ()
    releases: Sequence[Claim] = ()


class CommitterStopped(Exception):
    """The store is closing: the command was not written."""


class ConcurrencyConflict(Exception):
    """Another writer changed a stream this command wrote or read: decide again."""


class ClaimTaken(Exception):
    def __init__(self, scope: str, key: str) -> None:
        super().__init__(f"{scope} {key} is taken")
        self.scope = scope
        self.key = key


class EventStore(Protocol):
    """The event store as the use cases, the pipeline and the scheduler see it. Implementations:
    `eventstore.postgres.PostgresEventStore` (the truth) and `eventstore.memory.InMemoryEventStore`, both held
    to `tests/test_store.py`; `eventstore.overlay.Overlay` decides ahead on top of either."""

    codec: Codec  # what reads the stored events this store holds

    def load(self, stream_id: str) -> list[StoredEvent]:
        """A stream's events in version order ([] for a stream without events)."""
        ...

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """Many streams at once; every id asked for is a key, a stream without events maps to []."""
        ...

    def append(self, append: Append) -> list[int]:
        """Commits one append atomically; returns its events' positions. Raises `ConcurrencyConflict` when a
        (stream, version) it writes exists or a stream it read has moved, `ClaimTaken` when a claim is held."""
        ...

    def append_together(self, appends: list[Append]) -> list[Future[list[int]]]:
        """Commits the appends in one transaction when they can share one (`eventstore.batching`) and all
        succeed, else each on its own; each future holds an append's positions or the error that refused it."""
        ...

    def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Recorded]:
        """The log's events after a position (up to `upto` inclusive), decoded, in position order."""
        ...

    def head(self) -> int:
        """The last position written (0 for an empty log)."""
        ...

    def close(self) -> None: ...
