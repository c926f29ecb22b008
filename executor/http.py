"""Calling a run's endpoint: one POST of the run's JSON, bounded in time, to an address the outbound policy
allows; the attempt's outcome from the answer's status and the report in its body; and the fixed messages a
failed call tells the tenant."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.helpers import is_ip_address
from yarl import URL

from domain.run import AttemptOutcome, RunState, reported_count, reported_usage
from domain.secrets import masked_text, masked_url
from executor.outbound import CheckingResolver, DestinationDenied, OutboundPolicy

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 20  # an endpoint's answer is a short report; more than this is not read as one
# What a failed call tells the tenant: its code and one fixed message per code. Never the other side's text or the
# socket's (a service's banner, a parser quoting it, refused against reset), which would make runs a port scanner
# of the executor's network. The details go to the process log at DEBUG, credentials masked.
FAILURES = {
    # One answer for a host that resolves to a refused address and for one that does not resolve at all: telling
    # them apart would let a tenant find out which internal names exist.
    "DESTINATION_DENIED": "The endpoint's host does not resolve to an address runs may call",
    "INVALID_URL": "The endpoint's URL cannot be called",
    "CONNECTION_ERROR": "The endpoint could not be reached, or did not answer over HTTP",
    "TIMEOUT": "The endpoint did not answer in time",
}
HTTP_FAILURE = "The endpoint answered with a status other than 2xx"


class EndpointClient:
    """Calls endpoints for runs, `concurrency` calls at once at most, each within `timeout` seconds."""

    def __init__(self, policy: OutboundPolicy | None = None, *, timeout: float = 30.0, concurrency: int = 64) -> None:
        self.policy = policy or OutboundPolicy()
        self.timeout = timeout
        self.concurrency = concurrency
        self._proxies = urllib.request.getproxies()  # HTTP(S)_PROXY, as httpx followed them

    @asynccontextmanager
    async def open(self) -> AsyncIterator[EndpointClient]:
        """The client with its HTTP sessions open, for as long as the block runs."""
        # aiohttp, not httpx: httpx's pool checks every idle connection with system calls on every request, which
        # with many calls in flight costs many times aiohttp's CPU per call (python -m bench.clients; BENCHMARKS.md,
        # "Appendix: why the code is the way it is").
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
            yield self
        await resolver.close()  # a connector does not close a resolver it was given

    async def call(self, run: RunState, url: str, total_stages: int | None) -> AttemptOutcome:
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
            return AttemptOutcome(error_code=f"HTTP_{status}", error_message=HTTP_FAILURE, **reported)
        return AttemptOutcome(**{"total_stages": total_stages, **reported})

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


def _failure(code: str, run: RunState, url: str, error: BaseException) -> AttemptOutcome:
    detail = masked_text(str(error))
    log.debug("executor: run %s: %s: %s: %s", run.run_id, masked_url(url), type(error).__name__, detail)
    return AttemptOutcome(error_code=code, error_message=FAILURES[code])


async def _read_answer(response: aiohttp.ClientResponse) -> bytes | None:
    """The answer's body, or None when it is longer than a report can be."""
    body = bytearray()
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return None
    return bytes(body)


def _report(answer: bytes | None) -> dict[str, Any]:
    """What a JSON answer may tell about the execution (the report fields of an AttemptOutcome it sets):
    stages and token usage."""
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
