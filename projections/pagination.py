"""Opaque keyset cursors: the sort key of the last item a page showed."""

from __future__ import annotations

import base64
import binascii

from domain.errors import FieldError, ValidationFailed


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


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        version, _, key = _raw(cursor).partition(":")
        if version != "k1" or not key.isdigit():
            raise ValueError(key)
        return int(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid(cursor) from None


def decode_time_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None or cursor == "":
        return None
    try:
        version, micros, item_id = _raw(cursor).split(":", 2)
        if version != "t1" or not micros.isdigit() or not item_id:
            raise ValueError(micros)
        return int(micros), item_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid(cursor) from None


class Page:
    """Fetch `limit + 1` rows ordered by key; this tells whether there is more without a second query."""

    def __init__(self, rows: list, limit: int, key_of) -> None:
        self.has_more = len(rows) > limit
        self.items = rows[:limit]
        self.next_cursor = encode_cursor(key_of(self.items[-1])) if self.has_more else None
