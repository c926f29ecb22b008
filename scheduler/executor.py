"""The executor: runs pending runs against their endpoints, with retries and leases.

Any number of executors may run. Each finds work in the runs view and claims an attempt through the
run aggregate (optimistic concurrency: one claimant wins), so no attempt runs twice at once; an
attempt whose executor died is taken over when its lease expires, so no run is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.helpers import is_ip_address
from psycopg_pool import AsyncConnectionPool
from yarl import URL

from commands.actions import finish_attempt, start_attempt
from commands.aggregates import Aggregates
from domain.catalog import CATALOG
from domain.run import RunState, reported_count, reported_usage
from domain.secrets import masked_text, masked_url
from pipeline.activity import ActivityPublisher
from pipeline.roles import sleep_unless
from projections.actions import runnable_runs
from projections.activity import ActivityRecord, new_id
from scheduler.outbound import CheckingResolver, DestinationDenied, OutboundPolicy

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 20  # an endpoint's answer is a short report; more than this is not read as one
# What a failed call tells the tenant: its code and one fixed message per code. Never the other side's text or the
# socket's (a service's banner, a parser quoting it, refused against reset), which would make runs a port scanner
# of the executor's network. The details go to the process log at DEBUG, credentials masked.
FAILURES = {
    "DESTINATION_DENIED": "The endpoint's address may not be called",
    "INVALID_URL": "The endpoint's URL cannot be called",
    "CONNECTION_ERROR": "The endpoint could not be reached, or did not answer over HTTP",
    "TIMEOUT": "The endpoint did not answer in time",
}
HTTP_FAILURE = "The endpoint answered with a status other than 2xx"


class Executor:
    def __init__(
        self,
        aggregates: Aggregates,
        pool: AsyncConnectionPool,
        *,
        policy: OutboundPolicy | None = None,
        timeout: float = 30.0,
        concurrency: int = 64,
        org_concurrency: int = 8,
        poll_interval: float = 0.1,
        activity: ActivityPublisher | None = None,
    ) -> None:
        self.aggregates = aggregates
        self.activity = activity
        self.pool = pool
        self.policy = policy or OutboundPolicy()
        self.timeout = timeout
        self.lease_seconds = 2 * timeout + 5  # outlives any attempt (bounded by timeout) with room to record it
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        # Attempts of one org in flight at most, so one org's slow endpoints cannot hold every slot.
        self.org_concurrency = org_concurrency
        self._slots = asyncio.Semaphore(concurrency)
        # The commands (claim, finish, endpoint read) block on PostgreSQL: a thread each, as many as attempts
        # may be in flight. asyncio's default pool has min(32, cores + 4) threads, six on two cores, which
        # capped runs at a few dozen a second however fast the endpoints answered.
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="executor")
        self._proxies = urllib.request.getproxies()  # HTTP(S)_PROXY, as httpx followed them
        self._in_flight: set[str] = set()
        self._org_in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        # aiohttp, not httpx: httpx's pool checks every idle connection with system calls on every request, which
        # at 64 calls in flight cost 1.6 ms of CPU a call against aiohttp's 0.1 (python -m bench.clients).
        resolver = CheckingResolver(self.policy)
        connector = aiohttp.TCPConnector(limit=self.concurrency, resolver=resolver)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        # Not trust_env: besides the proxy variables it sends ~/.netrc credentials (its `default` entry to any
        # host) to every endpoint a tenant names. The proxy variables are followed by `_proxy_for` instead.
        # Calls through a proxy connect to the proxy, which the operator chose: their own session resolves it
        # unchecked, and `_check` checks the target's addresses instead.
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as client,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency), timeout=timeout) as proxied,
        ):
            self._client, self._proxied = client, proxied
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
        await resolver.close()  # a connector does not close a resolver it was given
        self._threads.shutdown(wait=False)

    async def poll(self) -> None:
        async with self.pool.connection() as conn:
            work = await runnable_runs(conn, self.aggregates.clock(), 2 * self.concurrency, self.org_concurrency)
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
                trace_id = secrets.token_hex(16)
                run = await self._blocking(start_attempt, self.aggregates, org_id, run_id, self.lease_seconds, trace_id)
                if run is None:
                    return  # another executor has it, or it is not due after all
                started = time.perf_counter()
                outcome = await self.attempt(run)
                elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
                await self._blocking(
                    finish_attempt, self.aggregates, org_id, run_id, trace_id, attempt=run.attempt, **outcome
                )
                if self.activity is not None:
                    self.activity.record(_execution_record(run, outcome, trace_id, elapsed_ms))
        except Exception:  # noqa: BLE001 - the lease expires and the run is retried
            log.exception("executor: run %s", run_id)
        finally:
            self._in_flight.discard(run_id)
            self._org_in_flight[org_id] -= 1
            if not self._org_in_flight[org_id]:
                del self._org_in_flight[org_id]

    async def _blocking(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._threads, partial(function, *args, **kwargs))

    async def attempt(self, run: RunState) -> dict[str, Any]:
        endpoint, _ = await self._blocking(self.aggregates.load, CATALOG, run.endpoint_id, run.org_id)
        if endpoint is None or endpoint.deleted:
            return {"error_code": "ENDPOINT_NOT_FOUND", "error_message": f"Endpoint {run.endpoint_id} is gone"}
        url = endpoint.fields.get("url")
        total = endpoint.fields.get("total_stages")
        if not url:  # the built-in echo executor
            return {"stages_completed": total, "total_stages": total}
        body = {
            "execution_id": run.execution_id,
            "run_id": run.run_id,
            "action_id": run.action_id,
            "thread_id": run.resolved_thread_id,
            "payload": run.resolved_payload,
        }
        started = time.monotonic()
        try:
            # This bounds the whole call, resolving, connecting and reading included, so an attempt always ends
            # within its lease (timeout + 30 s) and is never run twice by a second executor.
            async with asyncio.timeout(self.timeout):
                target, proxy = URL(url), self._proxy_for(url)
                await self._check(target, proxy)
                async with (self._proxied if proxy else self._client).post(
                    target, data=_encoder.encode(body), headers=_JSON, allow_redirects=False, proxy=proxy
                ) as response:
                    status, answer = response.status, await _read_answer(response)
        except DestinationDenied as error:
            return _failure("DESTINATION_DENIED", run, url, error)
        except TimeoutError as error:  # before OSError, which it is
            return _failure("TIMEOUT", run, url, error)
        except (ValueError, OverflowError) as error:  # aiohttp.InvalidURL too: a URL that cannot be called at all
            return _failure("INVALID_URL", run, url, error)
        except (aiohttp.ClientError, OSError) as error:
            return _failure("CONNECTION_ERROR", run, url, error)
        log.debug("executor: %s answered %s in %.3fs", masked_url(url), status, time.monotonic() - started)
        reported = _report(answer)
        if not 200 <= status < 300:
            return {"error_code": f"HTTP_{status}", "error_message": HTTP_FAILURE, **reported}
        return {"total_stages": total, **reported}

    async def _check(self, target: URL, proxy: str | None) -> None:
        """Raises DestinationDenied for a target the policy refuses. On direct calls the resolver checks names,
        but the connector takes what looks like an IP address without asking it; through a proxy, the proxy
        connects, so the target's own addresses are checked here."""
        host = target.raw_host or ""
        if is_ip_address(host):
            refused = self.policy.refuses_literal(host)  # ValueError for a form aiohttp would refuse too (127.1)
        elif proxy:
            refused = await self.policy.refuses_name(host)
        else:
            return
        if refused:
            raise DestinationDenied(host)

    def _proxy_for(self, url: str) -> str | None:
        """The proxy HTTP(S)_PROXY names for this URL, unless NO_PROXY exempts its host."""
        if not self._proxies:
            return None
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        return None if proxy is None or urllib.request.proxy_bypass(parts.hostname or "") else proxy


_encoder = msgspec.json.Encoder()
_JSON = {"Content-Type": "application/json"}


def _failure(code: str, run: RunState, url: str, error: BaseException) -> dict[str, Any]:
    detail = masked_text(str(error))
    log.debug("executor: run %s: %s: %s: %s", run.run_id, masked_url(url), type(error).__name__, detail)
    return {"error_code": code, "error_message": FAILURES[code]}


async def _read_answer(response: aiohttp.ClientResponse) -> bytes | None:
    """The answer's body, or None when it is longer than a report can be."""
    body = bytearray()
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return None
    return bytes(body)


def _execution_record(run: RunState, outcome: dict[str, Any], trace_id: str, duration_ms: float) -> ActivityRecord:
    """Each attempt is activity too, so endpoint feeds and token totals are real."""
    error_code = outcome.get("error_code")
    return ActivityRecord(
        id=new_id(),
        org_id=run.org_id,
        timestamp=datetime.now(UTC),
        trace_id=trace_id,
        action="execute",
        status_code=500 if error_code else 200,
        success=error_code is None,
        duration_ms=duration_ms,
        workspace_id=run.workspace_id,
        app_id=run.app_id,
        principal_type="system",
        principal_id="executor",
        resource_type="endpoint",
        resource_id=run.endpoint_id,
        error_code=error_code,
        execution_id=run.execution_id,
        stages_completed=outcome.get("stages_completed"),
        total_stages=outcome.get("total_stages"),
        token_usage=outcome.get("token_usage"),
        metadata={"run_id": run.run_id, "action_id": run.action_id, "attempt": run.attempt},
    )


def _report(answer: bytes | None) -> dict[str, Any]:
    """What a JSON answer may tell about the execution: stages and token usage."""
    try:
        data = msgspec.json.decode(answer) if answer else None
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested past what a decoder follows
        return {}
    if not isinstance(data, dict):
        return {}
    report: dict[str, Any] = {}
    for field in ("stages_completed", "total_stages"):
        if (count := reported_count(data.get(field))) is not None:
            report[field] = count
    usage = data.get("token_usage")
    if isinstance(usage, int) and not isinstance(usage, bool):
        usage = {"total_tokens": usage}
    if (kept := reported_usage(usage)) is not None:
        report["token_usage"] = kept
    return report
