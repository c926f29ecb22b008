"""Which appends can share one commit, and how they are merged into one.

The versions an append read are checked before any event is inserted, so within one commit nobody
could tell which of two appends came first. Two appends therefore share a commit only when neither
reads a stream the other writes, no two read one stream at different versions, and no two write one
stream. Group commit (`eventstore.postgres.GroupCommit`) and the scheduler's batching of fires are
both built on this rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from eventstore.protocol import Append


def written(append: Append) -> set[str]:
    return {str(event.originator_id) for event in append.events}


class Commit:
    """Appends that can share one commit, added while each still fits."""

    def __init__(self) -> None:
        self.read: dict[str, int] = {}
        self.written: set[str] = set()
        self.size = 0

    def admits(self, append: Append, writes: set[str] | None = None) -> bool:
        writes = written(append) if writes is None else writes
        return (
            all(self.read.get(stream, version) == version and stream not in self.written
                for stream, version in append.expected.items())
            and self.written.isdisjoint(writes)
            and writes.isdisjoint(self.read)
            and writes.isdisjoint(append.expected)
        )

    def add(self, append: Append, writes: set[str] | None = None) -> None:
        self.read.update(append.expected)
        self.written |= written(append) if writes is None else writes
        self.size += 1


def can_share(appends: Iterable[Append]) -> bool:
    commit = Commit()
    for append in appends:
        writes = written(append)
        if not commit.admits(append, writes):
            return False
        commit.add(append, writes)
    return True


def merged(appends: list[Append]) -> Append:
    """One append doing what the appends (which can share a commit) do."""
    expected: dict[str, int] = {}
    for append in appends:
        expected.update(append.expected)
    return Append(
        events=[event for append in appends for event in append.events],
        expected=expected,
        claims=[claim for append in appends for claim in append.claims],
        releases=[release for append in appends for release in append.releases],
    )


def chunks(appends: list[Append], events: int) -> Iterator[list[Append]]:
    """Consecutive runs of the appends with at most `events` events in all (or a single larger append)."""
    chunk: list[Append] = []
    size = 0
    for append in appends:
        if chunk and size + len(append.events) > events:
            yield chunk
            chunk, size = [], 0
        chunk.append(append)
        size += len(append.events)
    if chunk:
        yield chunk
