"""Which rows of a view a committed batch changed, told to the API processes that cache them.

The live projector sends a PostgreSQL NOTIFY inside each batch's transaction, naming the keys the batch
changed in a cached view (a view's handler names them: `cached_keys`). PostgreSQL delivers a notice only
when, and just after, its transaction commits, in commit order: a listener never hears of a change it
cannot read yet, nor misses one it could. A rebuild's swap, which replaces a view's tables whole, tells
`EVERY_KEY`. The listening side is `api.cache`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import psycopg

from domain.events import Recorded

EVERY_KEY = "*"  # the whole view changed (a rebuild was swapped in)
SEPARATOR = "\n"  # keys are resource ids, which never hold one
MAX_PAYLOAD = 7_900  # PostgreSQL refuses a payload of 8,000 bytes or more


@runtime_checkable
class CachedView(Protocol):
    """A view whose rows API processes cache: the live projector announces the keys each batch changes."""

    name: str

    def cached_keys(self, batch: list[Recorded]) -> set[str]:
        """The keys of cached rows these events change."""


def channel(view: str) -> str:
    return f"mm_changed_{view}"


def payloads(keys: Iterable[str]) -> list[str]:
    """Keys joined into as few payloads as fit PostgreSQL's limit, none split across two."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for key in sorted(set(keys)):
        cost = len(key.encode()) + 1
        if current and size + cost > MAX_PAYLOAD:
            chunks.append(SEPARATOR.join(current))
            current, size = [], 0
        current.append(key)
        size += cost
    if current:
        chunks.append(SEPARATOR.join(current))
    return chunks


async def announce(conn: psycopg.AsyncConnection, view: str, keys: Iterable[str]) -> None:
    """Tells listeners, once the caller's transaction commits, that these keys of `view` changed."""
    if chunks := payloads(keys):
        await conn.execute("SELECT pg_notify(%s, chunk) FROM unnest(%s::text[]) AS chunk", (channel(view), chunks))


def keys_of(payload: str) -> list[str]:
    return payload.split(SEPARATOR) if payload else []
