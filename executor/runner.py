"""The executor: runs pending runs against their endpoints, with retries and leases.

Any number of executors may run. Each finds work in the runs view and claims an attempt through the
run aggregate (optimistic concurrency: one claimant wins), so no attempt runs twice at once; an
attempt whose executor died is taken over when its lease expires, so no run is stuck. Each org gets
a share of the attempts in flight, so one org's slow endpoints cannot hold them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from psycopg_pool import AsyncConnectionPool

from activity.publisher import ActivityPublisher
from activity.recording import execution_record
from commands.actions import finish_attempt, start_attempt
from commands.unit_of_work import CommandRunner
from domain.catalog import CATALOG
from domain.events import new_trace_id
from domain.run import AttemptOutcome, RunState
from executor.http import EndpointClient
from executor.outbound import OutboundPolicy
from pipeline.roles import sleep_unless
from projections.actions import runnable_runs

log = logging.getLogger(__name__)


class Executor:
    def __init__(
        self,
        commands: CommandRunner,
        pool: AsyncConnectionPool,
        *,
        policy: OutboundPolicy | None = None,
        timeout: float = 30.0,
        concurrency: int = 64,
        org_concurrency: int = 8,
        poll_interval: float = 0.1,
        activity: ActivityPublisher | None = None,
    ) -> None:
        self.commands = commands
        self.activity = activity
        self.pool = pool
        self.http = EndpointClient(policy, timeout=timeout, concurrency=concurrency)
        self.timeout = timeout
        self.lease_seconds = 2 * timeout + 5  # outlives any attempt (bounded by timeout) with room to record it
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        # Attempts of one org in flight at most, so one org's slow endpoints cannot hold every slot.
        self.org_concurrency = org_concurrency
        self._slots = asyncio.Semaphore(concurrency)
        # The commands (claim, finish, endpoint read) block on PostgreSQL: a thread each, as many as attempts
        # may be in flight. asyncio's default pool has min(32, cores + 4) threads, fewer than the attempts in
        # flight on a small machine, and the attempts would wait for them however fast the endpoints answered
        # (BENCHMARKS.md, "Appendix: why the code is the way it is").
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="executor")
        self._in_flight: set[str] = set()
        self._org_in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        async with self.http.open():
            while not stop.is_set():
                try:
                    await self.poll()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - PostgreSQL trouble: try again shortly
                    log.warning("executor: %s: %s", type(error).__name__, error)
                await sleep_unless(stop, self.poll_interval)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.timeout)
        self._threads.shutdown(wait=False)

    async def poll(self) -> None:
        async with self.pool.connection() as conn:
            work = await runnable_runs(conn, self.commands.clock(), 2 * self.concurrency, self.org_concurrency)
        for org_id, run_id in work:
            if run_id not in self._in_flight and self._org_in_flight[org_id] < self.org_concurrency:
                self._in_flight.add(run_id)
                self._org_in_flight[org_id] += 1
                task = asyncio.create_task(self._execute(org_id, run_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _execute(self, org_id: str, run_id: str) -> None:
        try:
            async with self._slots:
                trace_id = new_trace_id()
                run = await self._blocking(start_attempt, self.commands, org_id, run_id, self.lease_seconds, trace_id)
                if run is None:
                    return  # another executor has it, or it is not due after all
                started = time.perf_counter()
                outcome = await self.attempt(run)
                elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
                await self._blocking(finish_attempt, self.commands, org_id, run_id, trace_id, run.attempt, outcome)
                if self.activity is not None:
                    self.activity.record(execution_record(run, outcome, trace_id, elapsed_ms))
        except Exception:  # noqa: BLE001 - the lease expires and the run is retried
            log.exception("executor: run %s", run_id)
        finally:
            self._in_flight.discard(run_id)
            self._org_in_flight[org_id] -= 1
            if not self._org_in_flight[org_id]:
                del self._org_in_flight[org_id]

    async def _blocking(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._threads, partial(function, *args, **kwargs))

    async def attempt(self, run: RunState) -> AttemptOutcome:
        endpoint, _ = await self._blocking(self.commands.load, CATALOG, run.endpoint_id, run.org_id)
        if endpoint is None or endpoint.deleted:
            return AttemptOutcome(error_code="ENDPOINT_NOT_FOUND", error_message=f"Endpoint {run.endpoint_id} is gone")
        url = endpoint.fields.get("url")
        total = endpoint.fields.get("total_stages")
        if not url:  # the built-in echo executor
            return AttemptOutcome(stages_completed=total, total_stages=total)
        return await self.http.call(run, url, total)
