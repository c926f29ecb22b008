"""Who is calling, and may they do this? Runs as a guard, before any input is parsed."""

from __future__ import annotations

import hmac
import re
import secrets

import anyio
import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from api.errors import Forbidden, Unauthorized
from commands.aggregates import Context
from domain import access
from domain.errors import FieldError, ValidationFailed
from domain.events import Actor

ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
ROOT_ACTOR = Actor(principal_type="root", principal_id="root", user_id="root")


class Principal(msgspec.Struct, frozen=True):
    actor: Actor
    role: str
    org_id: str | None  # None: the root token, which acts on every org

    def may(self, permission: str) -> bool:
        return self.org_id is None or access.allows(self.role, permission)


def trace_id_of(connection: ASGIConnection) -> str:
    match = TRACEPARENT.fullmatch(connection.headers.get("traceparent", ""))
    return match.group(1) if match and match.group(1) != "0" * 32 else secrets.token_hex(16)


async def authenticate(connection: ASGIConnection) -> Principal:
    system = connection.app.state.system
    scheme, _, presented = connection.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized()
    root = system.settings.root_token
    if root and hmac.compare_digest(presented.encode(), root.encode()):
        return Principal(actor=ROOT_ACTOR, role="owner", org_id=None)
    verifier = system.tokens
    token = verifier.verify_cached(presented)
    if token is None:
        token = await anyio.to_thread.run_sync(verifier.verify, presented)
    if token is None:
        raise Unauthorized()
    actor = Actor(principal_type=token.principal_type, principal_id=token.user_id or token.token_id,
                  user_id=token.user_id, token_id=token.token_id)
    return Principal(actor=actor, role=token.role, org_id=token.org_id)


async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Authenticates (401), checks the org in the path (422), then the permission (403)."""
    principal = await authenticate(connection)
    permission = handler.opt.get("permission", "")
    org_id = connection.path_params.get("org_id")
    if org_id is not None:
        if not ORG_ID.fullmatch(org_id):
            raise ValidationFailed([FieldError(("org_id",), "org_id must be 1-64 letters, digits, '_' or '-'",
                                               "string_pattern_mismatch", org_id,
                                               {"pattern": ORG_ID.pattern})], source="path")
        if principal.org_id is not None and principal.org_id != org_id:
            raise Forbidden(permission or "org:access")
    if permission and not principal.may(permission):
        raise Forbidden(permission)
    connection.state.principal = principal
    connection.state.trace_id = trace_id_of(connection)


def context_of(connection: ASGIConnection) -> Context:
    principal: Principal = connection.state.principal
    return Context(org_id=connection.path_params["org_id"], actor=principal.actor,
                   trace_id=connection.state.trace_id)
