"""The composition root: `build` makes a process's services from its settings, `run_roles` runs its roles on them.

Every role (api, relay, projector) can run alone or together with the others in one process
(`mechamental dev`); they only meet through PostgreSQL and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass

import uvicorn
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from api.cache import ChangeListener, ViewCache
from api.limits import RateLimiter
from api.metrics import Metrics
from commands.aggregates import Aggregates, Clock, utc_now
from commands.provisioning import BucketProvisioner, DirectoryBuckets
from commands.tokens import TokenVerifier
from domain.aggregates import AGGREGATES
from domain.secrets import masked_url
from eventstore import Codec, EventStore
from eventstore.postgres import PostgresEventStore, datastore_from_url
from executor.outbound import OutboundPolicy
from executor.runner import Executor
from mechamental.settings import Settings
from pipeline import positions
from pipeline.activity import ActivityConsumer, ActivityPublisher
from pipeline.broker import ensure_stream
from pipeline.relay import Relay
from pipeline.subscription import Subscription
from projections import activity
from projections.actions import ActionListing
from projections.analytics import Analytics
from projections.catalog import CatalogListing
from projections.environments import EnvironmentListing
from projections.read_your_writes import ReadYourWrites
from projections.tokens import TokenListing
from projections.workspaces import WorkspaceListing
from scheduler.scheduler import Scheduler

log = logging.getLogger(__name__)

ROLES = ("api", "relay", "projector", "scheduler", "executor")


def read_models():
    return [WorkspaceListing(), TokenListing(), CatalogListing(), EnvironmentListing(), ActionListing(), Analytics()]


def consumer_names() -> list[str]:
    """Everything that tracks a position in the log."""
    return [positions.RELAY, *(model.name for model in read_models()), BucketProvisioner.name]


def activity_stream(settings: Settings) -> str:
    return f"{settings.stream}_ACTIVITY"


class NatsConnection:
    """This process's NATS client once it has one: connected at `open`, else retried every second in the
    background (the event store feeds the views meanwhile)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: NATS | None = None
        self._retry: asyncio.Task | None = None

    def current(self) -> NATS | None:
        return self.client

    async def open(self) -> None:
        self.client = await connect_nats(self.url)
        if self.client is None:
            self._retry = asyncio.create_task(self._connect_later())

    async def _connect_later(self) -> None:
        while self.client is None:
            await asyncio.sleep(1.0)
            self.client = await connect_nats(self.url)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self.client is not None and not self.client.is_closed:
            with contextlib.suppress(Exception):
                await self.client.close()


@dataclass(frozen=True)
class Services:
    """What the roles and the API of one process use, made once by `build`; `open` connects, `close` lets go."""

    settings: Settings
    store: EventStore
    aggregates: Aggregates  # runs commands against the store
    pool: AsyncConnectionPool  # async connections to the read models (and the store's reads)
    nats: NatsConnection
    tokens: TokenVerifier
    limiter: RateLimiter
    workspace_cache: ViewCache  # workspaces by id: GET workspace, and the check behind every read under one
    read_your_writes: ReadYourWrites
    metrics: Metrics
    activity: ActivityPublisher | None  # None: recording off
    consumers: tuple[str, ...]  # everything that tracks a position in the log

    async def open(self) -> None:
        await self.pool.open(wait=False)
        await self.nats.open()

    async def close(self) -> None:
        await self.nats.close()
        await self.pool.close()
        await asyncio.to_thread(self.store.close)


def build(settings: Settings, clock: Clock = utc_now) -> Services:
    store = PostgresEventStore(datastore_from_url(settings.database_url), Codec(AGGREGATES))
    workspace_cache: ViewCache = ViewCache(WorkspaceListing.name, settings.read_cache_entries)
    metrics = Metrics([workspace_cache])
    aggregates = Aggregates(store, clock, on_command=metrics.command)
    pool = AsyncConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=20,
        open=False,
        kwargs={"autocommit": True, "connect_timeout": 3},
        timeout=3,  # a query waits this long for a connection, then the caller hears 503
    )
    nats = NatsConnection(settings.nats_url)
    activity_publisher = (
        ActivityPublisher(pool, nats.current, stream=activity_stream(settings), prefix=settings.subject_prefix)
        if settings.activity_recording
        else None
    )
    return Services(
        settings=settings,
        store=store,
        aggregates=aggregates,
        pool=pool,
        nats=nats,
        tokens=TokenVerifier(aggregates),
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        workspace_cache=workspace_cache,
        read_your_writes=ReadYourWrites(pool, settings.min_position_timeout),
        metrics=metrics,
        activity=activity_publisher,
        consumers=tuple(consumer_names()),
    )


def subscriptions(services: Services) -> list[Subscription]:
    # The views share one consumer and one transaction per batch; the provisioner, which calls out and
    # issues commands, has its own, so it never holds the views back.
    settings = services.settings
    handlers = [read_models(), BucketProvisioner(services.aggregates, DirectoryBuckets(settings.buckets_dir))]
    return [
        Subscription(
            handler,
            services.store,
            services.pool,
            settings.database_url,
            services.nats.current,
            stream=settings.stream,
            prefix=settings.subject_prefix,
        )
        for handler in handlers
    ]


def relay(services: Services) -> Relay:
    return Relay(
        services.settings.database_url,
        services.nats.current,
        codec=services.store.codec,
        stream=services.settings.stream,
        prefix=services.settings.subject_prefix,
    )


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
    datastore = datastore_from_url(settings.database_url, pool_size=1, max_overflow=0)
    store = PostgresEventStore(datastore, Codec(AGGREGATES))
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

    services = build(settings)
    await services.open()
    tasks: list[asyncio.Task] = []
    server = None
    try:
        if "relay" in roles:
            tasks.append(asyncio.create_task(relay(services).run(stop), name="relay"))
        if "scheduler" in roles:
            scheduler = Scheduler(services.aggregates, services.pool, settings.database_url)
            tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
        if "executor" in roles:
            policy = OutboundPolicy(allow=settings.outbound_allow, deny=settings.outbound_deny)
            executor = Executor(
                services.aggregates,
                services.pool,
                policy=policy,
                timeout=settings.executor_timeout,
                concurrency=settings.executor_concurrency,
                org_concurrency=settings.executor_org_concurrency,
                activity=services.activity,
            )
            tasks.append(asyncio.create_task(executor.run(stop), name="executor"))
        if services.activity is not None and roles & {"api", "executor"}:
            tasks.append(asyncio.create_task(services.activity.run(stop), name="activity-publisher"))
        if "projector" in roles:
            tasks += [asyncio.create_task(s.run(stop), name=s.name) for s in subscriptions(services)]
            consumer = ActivityConsumer(
                services.pool,
                services.nats.current,
                stream=activity_stream(settings),
                prefix=settings.subject_prefix,
                retention_days=settings.activity_retention_days,
            )
            tasks.append(asyncio.create_task(consumer.run(stop), name="activity"))
        if "api" in roles:
            refresh = services.tokens.keep_confirmed(services.pool, stop)
            tasks.append(asyncio.create_task(refresh, name="token-refresh"))
            if settings.read_cache_entries > 0:
                listener = ChangeListener(settings.database_url, [services.workspace_cache])
                tasks.append(asyncio.create_task(listener.run(stop), name="view-cache"))
            app = ActivityMiddleware(create_app(services), services.activity, services.metrics)
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
        await services.close()
