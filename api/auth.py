"""Who is calling, and may they do this? Runs before any input is parsed, as the before-request hook of
the router holding every `/v1/orgs` controller (`api.app`) rather than a Litestar guard: Litestar hands
each guard a copy of the route handler, made for every request, a share of a GET workspace's CPU too large to
pay on every route (BENCHMARKS.md, "Appendix: why the code is the way it is")."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re

import anyio
import msgspec
from litestar.connection import ASGIConnection
from psycopg_pool import AsyncConnectionPool

from api.errors import Unauthorized
from api.limits import RateLimiter
from commands.tokens import TokenVerifier
from commands.unit_of_work import Context
from domain import access
from domain.errors import FieldError, Forbidden, ValidationFailed
from domain.events import ORG_ID, Actor, trace_id_from
from pipeline.roles import sleep_unless

log = logging.getLogger(__name__)

RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ROOT_ACTOR = Actor(principal_type="root", principal_id="root", user_id="root")


class Principal(msgspec.Struct, frozen=True):
    actor: Actor
    role: str
    org_id: str | None  # None: the root token, which acts on every org

    def may(self, permission: str) -> bool:
        return self.org_id is None or access.allows(self.role, permission)


def trace_id_of(connection: ASGIConnection) -> str:
    if trace_id := connection.scope.get("state", {}).get("trace_id"):
        return trace_id  # given by the activity middleware, which also echoes it
    return trace_id_from(connection.headers.get("traceparent"))


async def keep_tokens_confirmed(verifier: TokenVerifier, pool: AsyncConnectionPool, stop: asyncio.Event) -> None:
    """Refreshes the verifier's cache twice per `ttl` until `stop`, so requests seldom read a token's stream
    themselves: a task of the api role beside the request path, like the view caches' listener (api/cache.py)."""
    while not await sleep_unless(stop, verifier.ttl / 2):
        try:
            async with pool.connection() as conn:
                await verifier.refresh(conn)
        except Exception as error:  # noqa: BLE001 - PostgreSQL trouble: entries run out, requests load them
            log.info("token refresh: %s: %s", type(error).__name__, error)


def client_address(connection: ASGIConnection) -> str:
    client = connection.scope.get("client")
    return client[0] if client else "unknown"


def bearer_of(connection: ASGIConnection) -> str | None:
    scheme, _, presented = connection.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    return presented if scheme.lower() == "bearer" and presented else None


def is_secret(presented: str, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest(presented.encode(), secret.encode())


class Authorizer:
    """Authenticates a request's bearer token (the root token, or an org token the verifier knows) and checks
    the org in its path and the permission its route names, charging the rate limiter as it goes."""

    def __init__(
        self,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        root_token: str | None,
        metrics_token: str | None = None,
    ) -> None:
        self.verifier = verifier
        self.limiter = limiter
        self.root_token = root_token
        self.metrics_token = metrics_token

    def refuse(self, connection: ASGIConnection) -> Unauthorized:
        """A failed authentication: charged to the client's address under the general limit (429 when over)."""
        self.limiter.take_unauthenticated(client_address(connection))
        return Unauthorized()

    async def authenticate(self, connection: ASGIConnection) -> Principal:
        presented = bearer_of(connection)
        if presented is None:
            raise Unauthorized()
        if is_secret(presented, self.root_token):
            return Principal(actor=ROOT_ACTOR, role="owner", org_id=None)
        verifier = self.verifier
        token = verifier.verify_cached(presented)
        if token is None and verifier.needs_lookup(presented):
            address = client_address(connection)
            self.limiter.check_lookup(address)
            token = await anyio.to_thread.run_sync(verifier.verify, presented)
            if token is None:
                self.limiter.take_failed_lookup(address)
        if token is None:
            raise Unauthorized()
        actor = Actor(
            principal_type=token.principal_type,
            principal_id=token.user_id or token.token_id,
            user_id=token.user_id,
            token_id=token.token_id,
        )
        return Principal(actor=actor, role=token.role, org_id=token.org_id)

    async def authorize(self, connection: ASGIConnection) -> None:
        """The before-request hook of every `/v1/orgs` route: authenticates (401), checks the org in the path
        (422), then the permission (403) the route handler's `opt` names."""
        try:
            principal = await self.authenticate(connection)
        except Unauthorized:
            raise self.refuse(connection) from None
        connection.state.principal = principal  # known from here on, also to the activity record of a refusal
        connection.state.trace_id = trace_id_of(connection)
        self.limiter.take(principal.actor.token_id or principal.actor.principal_id)
        permission = connection.route_handler.opt.get("permission", "")
        _check_path(connection.path_params)
        org_id = connection.path_params.get("org_id")
        if org_id is not None:
            if principal.org_id is not None and principal.org_id != org_id:
                raise Forbidden(permission or "org:access")
        if permission and not principal.may(permission):
            raise Forbidden(permission)

    def is_scraper(self, connection: ASGIConnection) -> bool:
        """Whether the request carries the metrics token or the root token: an operator's view of the pipeline."""
        presented = bearer_of(connection) or ""
        return any(is_secret(presented, secret) for secret in (self.metrics_token, self.root_token))

    def authorize_scraper(self, connection: ASGIConnection) -> None:
        """`/metrics`: the metrics token or the root token, nothing else (401)."""
        if not self.is_scraper(connection):
            raise self.refuse(connection)


def _check_path(params: dict) -> None:
    errors = []
    for name, value in params.items():
        pattern = ORG_ID if name == "org_id" else RESOURCE_ID
        if isinstance(value, str) and not pattern.fullmatch(value):
            errors.append(
                FieldError(
                    (name,),
                    f"{name} must be letters, digits, '_' or '-'"
                    + (" (at most 64)" if name == "org_id" else ", '.' (at most 128)"),
                    "string_pattern_mismatch",
                    value,
                    {"pattern": pattern.pattern},
                )
            )
    if errors:
        raise ValidationFailed(errors, source="path")


def context_of(connection: ASGIConnection) -> Context:
    principal: Principal = connection.state.principal
    return Context(org_id=connection.path_params["org_id"], actor=principal.actor, trace_id=connection.state.trace_id)
