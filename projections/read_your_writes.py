"""Read-your-writes: a query that names a position (`X-Min-Position`, the `X-Event-Position` of an earlier
command) waits, for a bounded time, until every view that serves it has applied that position."""

from __future__ import annotations

import asyncio
import time

from psycopg_pool import AsyncConnectionPool

from domain.errors import FieldError, ValidationFailed
from pipeline import positions


class NotCaughtUp(Exception):
    """The views had not reached the position when the wait ran out (the API answers 503)."""

    def __init__(self, position: int, reached: dict[str, int]) -> None:
        super().__init__(f"The view has not reached position {position} yet; retry shortly")
        self.position = position
        self.reached = reached


class ReadYourWrites:
    def __init__(self, pool: AsyncConnectionPool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def wait_for(self, names: list[str], position: int | None) -> None:
        """Returns once every named view has applied `position`; raises NotCaughtUp after `timeout` seconds, and
        ValidationFailed at once for a position past the log's head (only a client's mistake can name one)."""
        if not position:
            return
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        checked_head = False
        while True:
            async with self.pool.connection() as conn:
                reached = await positions.read_positions(conn, names)
                if min(reached.values()) >= position:
                    return
                if not checked_head:
                    checked_head = True
                    head = await positions.head(conn)
                    if position > head:
                        raise ValidationFailed(
                            [
                                FieldError(
                                    ("x-min-position",),
                                    f"No event has position {position}: the log ends at {head}",
                                    "less_than_equal",
                                    position,
                                    {"le": head},
                                )
                            ],
                            source="header",
                        )
            if time.monotonic() >= deadline:
                raise NotCaughtUp(position, reached)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
