"""The scheduler: fires enabled scheduled actions at their slots.

One scheduler is active at a time (an advisory lock); others wait and take over when it dies. The
work list is the actions view (`next_run_at <= now`), but the decision is the action aggregate's:
firing a slot and moving `next_run_at` past it happen in one transaction, and the run's id derives
from the action and the slot, so no slot fires twice, across schedulers and restarts alike.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import psycopg
from psycopg_pool import AsyncConnectionPool

from commands.actions import fire_schedule
from commands.aggregates import Aggregates
from pipeline import positions
from pipeline.roles import sleep_unless
from projections.actions import due_actions

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        aggregates: Aggregates,
        pool: AsyncConnectionPool,
        database_url: str,
        *,
        interval: float = 0.2,
        batch: int = 500,
    ) -> None:
        self.aggregates = aggregates
        self.pool = pool
        self.database_url = database_url
        self.interval = interval
        self.batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as lock:
                    while not await positions.try_leadership(lock, "scheduler"):
                        if await sleep_unless(stop, 1.0):
                            return
                    log.info("scheduler: leading")
                    while not stop.is_set():
                        await self.tick()
                        await lock.execute("SELECT 1")  # still leader: the lock lives with this connection
                        await sleep_unless(stop, self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - PostgreSQL trouble: start over
                log.warning("scheduler: %s: %s; retrying", type(error).__name__, error)
                await sleep_unless(stop, 1.0)

    async def tick(self) -> int:
        """Fires every due action once; returns how many runs it started."""
        async with self.pool.connection() as conn:
            due = await due_actions(conn, self.aggregates.clock(), self.batch)
        started = 0
        for org_id, action_id in due:
            run = await asyncio.to_thread(fire_schedule, self.aggregates, org_id, action_id, secrets.token_hex(16))
            started += run is not None
        return started
