"""A listing's page and the total its filter matches, in one round trip.

Every listing answers `total` beside its page, so it asks two queries. Sent one after the other, the second
waits for the first's answer; in psycopg's pipeline mode both go out at once and their answers come back
together, one round trip instead of two (on a loaded machine a round trip is also a wait for the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg


async def counted_page(
    conn: psycopg.AsyncConnection, count: str, count_params: Sequence[Any], page: str, page_params: Sequence[Any]
) -> tuple[int, list[tuple]]:
    """(what `count` counts, the rows `page` selects), asked together."""
    async with conn.pipeline():
        counted = await conn.execute(count, count_params)
        rows = await conn.execute(page, page_params)
    (total,) = await counted.fetchone() or (0,)
    return total, await rows.fetchall()
