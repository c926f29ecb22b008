"""What every long-running role shares: waiting that a stop request cuts short, and leading alone.

Leadership of a role is a PostgreSQL session advisory lock, held by a connection of its own: it is released
when that connection ends, so also when the process holding it dies, and another process takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg

log = logging.getLogger(__name__)

# What a leader runs: given the connection that holds the lock (to check it still leads, or to write with it)
# and the stop request. Returning (or raising) gives the leadership up.
Work = Callable[[psycopg.AsyncConnection, asyncio.Event], Awaitable[None]]


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps, or returns early (True) when asked to stop."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def try_leadership(conn: psycopg.AsyncConnection, role: str) -> bool:
    """Takes `role`'s lock on `conn` if no other session holds it."""
    row = await (await conn.execute("SELECT pg_try_advisory_lock(hashtext('mechamental.' || %s))", (role,))).fetchone()
    return bool(row and row[0])


async def lead(database_url: str, role: str, stop: asyncio.Event, work: Work) -> None:
    """Runs `work` while this process leads `role`, so one process does it at a time; waits while another
    leads, and starts over (a new connection, leading again) after trouble, until asked to stop."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as lock:
                while not await try_leadership(lock, role):
                    if await sleep_unless(stop, 1.0):
                        return
                log.info("%s: leading", role)
                await work(lock, stop)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - PostgreSQL (or NATS) trouble: start over
            log.warning("%s: %s: %s; retrying", role, type(error).__name__, error)
            await sleep_unless(stop, 1.0)


class LeadershipTaken(Exception):  # noqa: N818 - says what happened, like the others of its kind
    def __init__(self, role: str) -> None:
        super().__init__(f"another process leads {role}")
        self.role = role


@asynccontextmanager
async def leadership(database_url: str, roles: list[str]) -> AsyncIterator[psycopg.AsyncConnection]:
    """For a job that runs once (a rebuild), not waiting its turn: a connection leading every role in `roles`
    for as long as the block runs, or LeadershipTaken at once when another process leads one of them."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as lock:
        for role in roles:
            if not await try_leadership(lock, role):
                raise LeadershipTaken(role)
        yield lock
