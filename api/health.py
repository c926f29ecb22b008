"""Liveness and readiness."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.openapi import ResponseSpec

from api.auth import bearer_of, is_secret, refuse
from api.common import system_of
from api.schemas import ErrorBody, Health


@get("/healthz", summary="Alive", tags=["Health"])
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", summary="Ready: PostgreSQL and NATS reachable; how far behind each view is", tags=["Health"])
async def readyz(request: Request) -> Response[Health]:
    system = system_of(request)
    checks = await system.check_backends()
    ready = all(value == "ok" for value in checks.values())
    lag = {}
    if checks.get("postgres") == "ok":
        lag = {
            name: {"position": position, "lag_events": events, "lag_seconds": seconds}
            for name, position, _, events, seconds in await system.lag()
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
async def metrics(request: Request) -> str:
    system = system_of(request)
    presented = bearer_of(request) or ""
    if not any(is_secret(presented, secret) for secret in (system.settings.metrics_token, system.settings.root_token)):
        raise refuse(request)
    return system.metrics(await system.lag())
