"""Liveness and readiness."""

from __future__ import annotations

from litestar import Request, Response, get

from api.common import system_of
from api.schemas import Health


@get("/healthz", summary="Alive", tags=["Health"])
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", summary="Ready: PostgreSQL and NATS reachable", tags=["Health"])
async def readyz(request: Request) -> Response[Health]:
    checks = await system_of(request).check_backends()
    ready = all(value == "ok" for value in checks.values())
    return Response(
        Health(status="ready" if ready else "unavailable", checks=checks), status_code=200 if ready else 503
    )
