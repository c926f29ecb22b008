"""A listing's pages: opaque keyset cursors (the sort key of the last item a page showed), the page itself,
and the page asked together with the total its filter matches.

Every listing answers `total` beside its page, so it asks two queries. Sent one after the other, the second
waits for the first's answer; in psycopg's pipeline mode both go out at once and their answers come back
together, one round trip instead of two (on a loaded machine a round trip is also a wait for the CPU).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from domain.errors import FieldError, ValidationFailed

POSITION_MAX = 2**63 - 1  # PostgreSQL bigint
# A time cursor's microseconds become a datetime through a float: a day short of datetime.max stays in range.
MICROS_MAX = (datetime(9999, 12, 31, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def encode_cursor(key: int | tuple[int, str]) -> str:
    """An int key (a position) or a (microseconds, id) key (a time-ordered feed)."""
    raw = f"k1:{key}" if isinstance(key, int) else f"t1:{key[0]}:{key[1]}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _raw(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


def _invalid(cursor: str) -> ValidationFailed:
    return ValidationFailed(
        [FieldError(("cursor",), "Invalid cursor: pass the next_cursor of a previous page", "value_error", cursor)],
        source="query",
    )


def _number(digits: str, highest: int) -> int:
    """A cursor's key, which a client may have forged: ASCII digits (`str.isdigit` also takes '²'), at most
    `highest`, and short enough for int() to read at all."""
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19 or int(digits) > highest:
        raise ValueError(digits)
    return int(digits)


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        version, _, key = _raw(cursor).partition(":")
        if version != "k1":
            raise ValueError(version)
        return _number(key, POSITION_MAX)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid(cursor) from None


def decode_time_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None or cursor == "":
        return None
    try:
        version, micros, item_id = _raw(cursor).split(":", 2)
        # the id goes to PostgreSQL as text (no NUL) beside a time Python can represent
        if version != "t1" or not item_id or len(item_id) > 128 or not (item_id.isascii() and item_id.isprintable()):
            raise ValueError(item_id)
        return _number(micros, MICROS_MAX), item_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid(cursor) from None


class Page:
    """Fetch `limit + 1` rows ordered by key; this tells whether there is more without a second query."""

    def __init__(self, rows: list, limit: int, key_of) -> None:
        self.has_more = len(rows) > limit
        self.items = rows[:limit]
        self.next_cursor = encode_cursor(key_of(self.items[-1])) if self.has_more else None


async def counted_page(
    conn: psycopg.AsyncConnection, count: str, count_params: Sequence[Any], page: str, page_params: Sequence[Any]
) -> tuple[int, list[tuple]]:
    """(what `count` counts, the rows `page` selects), asked together, in one round trip."""
    async with conn.pipeline():
        counted = await conn.execute(count, count_params)
        rows = await conn.execute(page, page_params)
    (total,) = await counted.fetchone() or (0,)
    return total, await rows.fetchall()
