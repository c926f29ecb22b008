"""Opaque keyset cursors: the sort key of the last item a page showed."""

from __future__ import annotations

import base64
import binascii

from domain.errors import FieldError, ValidationFailed


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"k1:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, key = raw.partition(":")
        if version != "k1" or not key.isdigit():
            raise ValueError(raw)
        return int(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed(
            [FieldError(("cursor",), "Invalid cursor: pass the next_cursor of a previous page", "value_error", cursor)],
            source="query",
        ) from None


class Page:
    """Fetch `limit + 1` rows ordered by key; this tells whether there is more without a second query."""

    def __init__(self, rows: list, limit: int, key_of) -> None:
        self.has_more = len(rows) > limit
        self.items = rows[:limit]
        self.next_cursor = encode_cursor(key_of(self.items[-1])) if self.has_more else None
