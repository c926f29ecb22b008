"""Wiring: builds the system from settings and runs the process roles.

Every role (api, relay, projector) can run alone or together with the others in one process
(`mechamental dev`); they only meet through PostgreSQL and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter

import uvicorn
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from api.cache import ChangeListener, ViewCache
from api.errors import Unavailable
from api.limits import RateLimiter
from commands.aggregates import Aggregates, Clock, utc_now
from commands.provisioning import BucketProvisioner, DirectoryBuckets
from commands.store import EventStore, datastore_from_url
from commands.tokens import TokenVerifier
from domain.errors import FieldError, ValidationFailed
from domain.secrets import masked_url
from mechamental.settings import Settings
from pipeline import positions
from pipeline.activity import ActivityConsumer, ActivityPublisher
from pipeline.broker import ensure_stream
from pipeline.relay import Relay
from pipeline.roles import sleep_unless
from pipeline.subscription import Subscription
from projections import activity
from projections.actions import ActionListing
from projections.analytics import Analytics
from projections.catalog import CatalogListing
from projections.environments import EnvironmentListing
from projections.tokens import TokenListing
from projections.workspaces import WorkspaceListing
from scheduler.executor import Executor
from scheduler.outbound import OutboundPolicy
from scheduler.scheduler import Scheduler

log = logging.getLogger(__name__)

ROLES = ("api", "relay", "projector", "scheduler", "executor")


def read_models():
    return [WorkspaceListing(), TokenListing(), CatalogListing(), EnvironmentListing(), ActionListing(), Analytics()]


def consumer_names() -> list[str]:
    """Everything that tracks a position in the log."""
    return [positions.RELAY, *(model.name for model in read_models()), BucketProvisioner.name]


class System:
    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.store = EventStore(datastore_from_url(settings.database_url))
        self.aggregates = Aggregates(self.store, clock)
        self.tokens = TokenVerifier(self.aggregates)
        self.pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=20,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": 3},
            timeout=3,  # a query waits this long for a connection, then the caller hears 503
        )
        self.nats: NATS | None = None
        self._nats_retry: asyncio.Task | None = None
        self.requests: Counter = Counter()  # (method, status) -> answered requests, for /metrics
        self.unrecorded: Counter = Counter()  # reason -> /v1/orgs requests not recorded in the org's activity
        self.limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        # Workspaces by id: GET workspace, and the check that a workspace exists behind every read under it.
        self.workspace_cache = ViewCache(WorkspaceListing.name, settings.read_cache_entries)
        self.activity = (
            ActivityPublisher(self.pool, lambda: self.nats, stream=self.activity_stream, prefix=settings.subject_prefix)
            if settings.activity_recording
            else None
        )

    @property
    def activity_stream(self) -> str:
        return f"{self.settings.stream}_ACTIVITY"

    async def open(self) -> None:
        await self.pool.open(wait=False)
        self.nats = await connect_nats(self.settings.nats_url)
        if self.nats is None:
            self._nats_retry = asyncio.create_task(self._connect_nats_later())

    async def _connect_nats_later(self) -> None:
        while self.nats is None:
            await asyncio.sleep(1.0)
            self.nats = await connect_nats(self.settings.nats_url)

    async def close(self) -> None:
        if self._nats_retry is not None:
            self._nats_retry.cancel()
        if self.nats is not None and not self.nats.is_closed:
            with contextlib.suppress(Exception):
                await self.nats.close()
        await self.pool.close()
        await asyncio.to_thread(self.store.close)

    def subscriptions(self) -> list[Subscription]:
        # The views share one consumer and one transaction per batch; the provisioner, which calls out and
        # issues commands, has its own, so it never holds the views back.
        handlers = [read_models(), BucketProvisioner(self.aggregates, DirectoryBuckets(self.settings.buckets_dir))]
        return [
            Subscription(
                handler,
                self.store,
                self.pool,
                self.settings.database_url,
                lambda: self.nats,
                stream=self.settings.stream,
                prefix=self.settings.subject_prefix,
            )
            for handler in handlers
        ]

    def relay(self) -> Relay:
        return Relay(
            self.settings.database_url,
            lambda: self.nats,
            stream=self.settings.stream,
            prefix=self.settings.subject_prefix,
        )

    async def refresh_tokens(self, stop: asyncio.Event) -> None:
        """Keeps the cached tokens confirmed (TokenVerifier.refresh) twice per freshness period, so requests
        seldom read a token's stream themselves."""
        while not await sleep_unless(stop, self.tokens.ttl / 2):
            try:
                async with self.pool.connection() as conn:
                    await self.tokens.refresh(conn)
            except Exception as error:  # noqa: BLE001 - PostgreSQL trouble: entries run out, requests load them
                log.info("token refresh: %s: %s", type(error).__name__, error)

    async def wait_for(self, names: list[str], position: int | None) -> None:
        """Read-your-writes: waits until every named view has applied `position`, or answers 503."""
        if not position:
            return
        deadline = time.monotonic() + self.settings.min_position_timeout
        delay = 0.002
        checked_head = False
        while True:
            async with self.pool.connection() as conn:
                reached = await positions.read_positions(conn, names)
                if min(reached.values()) >= position:
                    return
                if not checked_head:  # a position the log has not reached yet can only be a client's mistake
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
                raise Unavailable(
                    "PROJECTION_NOT_CAUGHT_UP",
                    f"The view has not reached position {position} yet; retry shortly",
                    required_position=position,
                    positions=reached,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def lag(self) -> list[tuple[str, int, int, int, float]]:
        async with self.pool.connection(timeout=2) as conn:
            return await positions.status(conn, consumer_names())

    def metrics(self, lag: list[tuple[str, int, int, int, float]]) -> str:
        """Prometheus text format."""
        lines = [
            "# TYPE mm_log_head gauge",
            f"mm_log_head {lag[0][2] if lag else 0}",
            "# TYPE mm_consumer_position gauge",
            "# TYPE mm_consumer_lag_events gauge",
            "# TYPE mm_consumer_lag_seconds gauge",
        ]
        for name, position, _, events, seconds in lag:
            lines += [
                f'mm_consumer_position{{consumer="{name}"}} {position}',
                f'mm_consumer_lag_events{{consumer="{name}"}} {events}',
                f'mm_consumer_lag_seconds{{consumer="{name}"}} {seconds}',
            ]
        lines += [
            "# TYPE mm_commands_total counter",
            f"mm_commands_total {self.aggregates.commands}",
            "# TYPE mm_command_seconds_sum counter",
            f"mm_command_seconds_sum {self.aggregates.command_seconds:.6f}",
            "# TYPE mm_http_requests_total counter",
        ]
        lines += [
            f'mm_http_requests_total{{method="{method}",status="{status}"}} {count}'
            for (method, status), count in sorted(self.requests.items())
        ]
        lines.append("# TYPE mm_activity_unrecorded_total counter")
        lines += [
            f'mm_activity_unrecorded_total{{reason="{reason}"}} {self.unrecorded[reason]}'
            for reason in ("unauthenticated", "other_org")
        ]
        cache = self.workspace_cache
        lines += [
            "# TYPE mm_view_cache_hits_total counter",
            f'mm_view_cache_hits_total{{view="{cache.view}"}} {cache.hits}',
            "# TYPE mm_view_cache_serving gauge",
            f'mm_view_cache_serving{{view="{cache.view}"}} {int(cache.listening)}',
        ]
        return "\n".join(lines) + "\n"

    async def check_backends(self) -> dict[str, str]:
        checks = {}
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised
            checks["postgres"] = f"unavailable: {type(error).__name__}"
        checks["nats"] = "ok" if self.nats is not None and self.nats.is_connected else "unavailable"
        return checks


async def connect_nats(url: str, timeout: float = 5.0) -> NATS | None:
    """Connects within `timeout`, then reconnects forever after any loss; None when NATS is down now
    (the store then feeds the views, and the caller may try again later)."""
    client = NATS()
    try:
        # Reconnecting forever also makes the *first* connect wait forever: bound it ourselves.
        await asyncio.wait_for(
            client.connect(
                url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2, name="mechamental"
            ),
            timeout,
        )
        return client
    except Exception as error:  # noqa: BLE001
        log.warning("NATS at %s unavailable (%s); continuing without it", masked_url(url), type(error).__name__)
        with contextlib.suppress(Exception):
            await client.close()
        return None


def migrate(settings: Settings) -> None:
    """Creates every table and the JetStream stream. Idempotent."""
    store = EventStore(datastore_from_url(settings.database_url, pool_size=1, max_overflow=0))
    try:
        store.create_tables()
    finally:
        store.close()
    asyncio.run(_migrate_async(settings))


async def _migrate_async(settings: Settings) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        await positions.create_tables(conn)
        for model in read_models():
            await conn.execute(model.ddl)
        await conn.execute(activity.DDL)
    client = await connect_nats(settings.nats_url)
    if client is not None:
        try:
            await ensure_stream(client.jetstream(), settings.stream, settings.subject_prefix)
        finally:
            await client.close()


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the role runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def run_roles(
    settings: Settings, roles: set[str], stop: asyncio.Event, on_ready=None, sockets: list | None = None
) -> None:
    """Runs `roles` until `stop`. The API serves on `sockets` when given (a listening socket shared by
    several API processes), else it binds the configured host and port itself."""
    from api.access import AccessLog
    from api.app import create_app
    from api.recording import ActivityMiddleware

    system = System(settings)
    await system.open()
    tasks: list[asyncio.Task] = []
    server = None
    try:
        if "relay" in roles:
            tasks.append(asyncio.create_task(system.relay().run(stop), name="relay"))
        if "scheduler" in roles:
            scheduler = Scheduler(system.aggregates, system.pool, settings.database_url)
            tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
        if "executor" in roles:
            policy = OutboundPolicy(allow=settings.outbound_allow, deny=settings.outbound_deny)
            executor = Executor(
                system.aggregates,
                system.pool,
                policy=policy,
                timeout=settings.executor_timeout,
                concurrency=settings.executor_concurrency,
                org_concurrency=settings.executor_org_concurrency,
                activity=system.activity,
            )
            tasks.append(asyncio.create_task(executor.run(stop), name="executor"))
        if system.activity is not None and roles & {"api", "executor"}:
            tasks.append(asyncio.create_task(system.activity.run(stop), name="activity-publisher"))
        if "projector" in roles:
            tasks += [asyncio.create_task(s.run(stop), name=s.name) for s in system.subscriptions()]
            consumer = ActivityConsumer(
                system.pool,
                lambda: system.nats,
                stream=system.activity_stream,
                prefix=settings.subject_prefix,
                retention_days=settings.activity_retention_days,
            )
            tasks.append(asyncio.create_task(consumer.run(stop), name="activity"))
        if "api" in roles:
            tasks.append(asyncio.create_task(system.refresh_tokens(stop), name="token-refresh"))
            if settings.read_cache_entries > 0:
                listener = ChangeListener(settings.database_url, [system.workspace_cache])
                tasks.append(asyncio.create_task(listener.run(stop), name="view-cache"))
            app = ActivityMiddleware(create_app(system), lambda: system.activity, system.requests, system.unrecorded)
            config = uvicorn.Config(
                AccessLog(app) if settings.access_log else app,
                host=settings.host,
                port=settings.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve(sockets=sockets), name="api"))
            while not server.started and not tasks[-1].done():
                await asyncio.sleep(0.02)
            if tasks[-1].done():
                tasks[-1].result()  # raises why the server could not start (e.g. the port is taken)
        if on_ready is not None:
            on_ready()
        # What exists now (modules, the app and its routes, the OpenAPI schema) lives as long as the process:
        # out of the collector's sight, full collections stay as cheap as the working set. Startup's garbage
        # is collected first, so none of it is frozen for good.
        gc.collect()
        gc.freeze()
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        if tasks:
            await asyncio.wait(tasks, timeout=10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await system.close()
