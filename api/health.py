"""Liveness, readiness and metrics: whether PostgreSQL and NATS answer, and how far behind each consumer of the
log is."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from api.auth import Authorizer
from api.metrics import Metrics
from api.schemas.errors import ErrorBody
from api.schemas.health import Health
from pipeline import positions


class Backends:
    def __init__(self, pool: AsyncConnectionPool, nats_of: Callable[[], NATS | None], consumers: Iterable[str]) -> None:
        self.pool = pool
        self.nats_of = nats_of  # () -> the process's NATS client, None while it has none
        self.consumers = list(consumers)  # everything that tracks a position in the log

    async def check(self) -> dict[str, str]:
        checks = {}
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised
            checks["postgres"] = f"unavailable: {type(error).__name__}"
        nats = self.nats_of()
        checks["nats"] = "ok" if nats is not None and nats.is_connected else "unavailable"
        return checks

    async def lag(self) -> list[tuple[str, int, int, int, float]]:
        """(consumer, position, head, lag in events, lag in seconds) of each consumer."""
        async with self.pool.connection(timeout=2) as conn:
            return await positions.status(conn, self.consumers)


@get("/healthz", summary="Alive", tags=["Health"])
async def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    summary="Ready: PostgreSQL and NATS reachable; with the metrics or root token, how far behind each consumer is",
    tags=["Health"],
)
async def readyz(
    request: Request, backends: NamedDependency[Backends], authorizer: NamedDependency[Authorizer]
) -> Response[Health]:
    checks = await backends.check()
    ready = all(value == "ok" for value in checks.values())
    lag = {}
    # A load balancer needs only the verdict; positions and the log's head tell how much every tenant writes.
    if checks.get("postgres") == "ok" and authorizer.is_scraper(request):
        lag = {
            name: {"position": position, "lag_events": events, "lag_seconds": seconds}
            for name, position, _, events, seconds in await backends.lag()
        }
    return Response(
        Health(status="ready" if ready else "unavailable", checks=checks, consumers=lag),
        status_code=200 if ready else 503,
    )


@get(
    "/metrics",
    summary="Prometheus metrics (Bearer: the metrics token or the root token)",
    tags=["Health"],
    media_type="text/plain; version=0.0.4",
    responses={401: ResponseSpec(ErrorBody, description="Missing or invalid token")},
)
async def metrics(
    request: Request,
    authorizer: NamedDependency[Authorizer],
    backends: NamedDependency[Backends],
    metrics: NamedDependency[Metrics],
) -> str:
    authorizer.authorize_scraper(request)
    return metrics.exposition(await backends.lag()).decode()
