"""The composition root: `build` makes a process's services from its settings, `run_roles` runs its roles on them.

Every role (api, relay, projector, scheduler, executor) can run alone or together with the others in one process
(`mechamental dev`); they only meet through PostgreSQL and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass

import uvicorn
from psycopg_pool import AsyncConnectionPool

import migrations
from activity.consumer import ActivityConsumer
from activity.publisher import ActivityPublisher
from api.auth import keep_tokens_confirmed
from api.cache import CacheNoticeListener, ViewCache
from api.limits import RateLimiter
from api.metrics import Metrics
from commands.actions import fire_schedule_on
from commands.provisioning import BucketProvisioner, DirectoryBuckets
from commands.tokens import TokenVerifier
from commands.unit_of_work import Clock, CommandRunner, utc_now
from domain.aggregates import AGGREGATES
from eventstore import Codec, EventStore
from eventstore.postgres import PostgresEventStore, datastore_from_url
from executor.outbound import OutboundPolicy
from executor.runner import Executor
from mechamental.settings import Settings
from pipeline import positions
from pipeline.broker import NatsConnection, connect_nats, ensure_stream
from pipeline.relay import Relay
from pipeline.subscription import Subscription
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


@dataclass(frozen=True)
class Services:
    """What the roles and the API of one process use, made once by `build`; `open` connects, `close` lets go."""

    settings: Settings
    store: EventStore
    commands: CommandRunner  # runs commands against the store
    pool: AsyncConnectionPool  # async connections to the read models (and the store's reads)
    nats: NatsConnection
    token_verifier: TokenVerifier
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
    commands = CommandRunner(store, clock, on_command=metrics.command)
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
        commands=commands,
        pool=pool,
        nats=nats,
        token_verifier=TokenVerifier(commands),
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
    handlers = [read_models(), BucketProvisioner(services.commands, DirectoryBuckets(settings.buckets_dir))]
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


def migrate(settings: Settings) -> None:
    """Applies the migration steps not yet applied (`migrations`) and makes the JetStream stream. Idempotent."""
    migrations.migrate(settings.database_url)
    asyncio.run(_ensure_stream(settings))


async def _ensure_stream(settings: Settings) -> None:
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
    from activity.recording import ActivityMiddleware
    from api.access_log import AccessLog
    from api.app import create_app

    services = build(settings)
    await services.open()
    tasks: list[asyncio.Task] = []
    server = None
    try:
        if "relay" in roles:
            tasks.append(asyncio.create_task(relay(services).run(stop), name="relay"))
        if "scheduler" in roles:
            fire_on = fire_schedule_on(services.commands.on_command)
            scheduler = Scheduler(
                services.store, fire_on, services.pool, settings.database_url, clock=services.commands.clock
            )
            tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
        if "executor" in roles:
            policy = OutboundPolicy(allow=settings.outbound_allow, deny=settings.outbound_deny)
            executor = Executor(
                services.commands,
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
            refresh = keep_tokens_confirmed(services.token_verifier, services.pool, stop)
            tasks.append(asyncio.create_task(refresh, name="token-refresh"))
            if settings.read_cache_entries > 0:
                listener = CacheNoticeListener(settings.database_url, [services.workspace_cache])
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
