"""What every long-running role shares: waiting that a stop request cuts short."""

from __future__ import annotations

import asyncio


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps, or returns early (True) when asked to stop."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
