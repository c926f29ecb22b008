"""What every long-running role shares: waiting that a stop request cuts short, and leading alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

from pipeline import positions

log = logging.getLogger(__name__)


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps, or returns early (True) when asked to stop."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def lead(
    database_url: str, role: str, stop: asyncio.Event, work: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Runs `work` while this process holds `role`'s leadership (an advisory lock on a connection of its
    own), so one process does it at a time; waits while another holds it, and starts over after trouble."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as lock:
                while not await positions.try_leadership(lock, role):
                    if await sleep_unless(stop, 1.0):
                        return
                await work(stop)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - PostgreSQL trouble: start over
            log.warning("%s: %s: %s; retrying", role, type(error).__name__, error)
            await sleep_unless(stop, 1.0)
