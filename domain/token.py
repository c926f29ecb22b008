"""The API token aggregate. Only a hash of the secret is ever recorded."""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.access import PRINCIPAL_TYPES, ROLES
from domain.errors import Conflict, NotFound, Rules
from domain.events import AggregateType, DomainEvent, EventMeta, register


class TokenState(msgspec.Struct):
    token_id: str
    org_id: str
    name: str
    role: str
    user_id: str | None
    principal_type: str
    secret_hash: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class IssueToken(msgspec.Struct, frozen=True):
    token_id: str
    name: str
    role: str
    secret_hash: str
    user_id: str | None = None
    principal_type: str = "user"


class RevokeToken(msgspec.Struct, frozen=True):
    pass


class TokenIssued(DomainEvent, frozen=True):
    token_id: str
    name: str
    role: str
    user_id: str | None
    principal_type: str
    secret_hash: str


class TokenRevoked(DomainEvent, frozen=True):
    pass


register("token", TokenIssued, TokenRevoked)

TokenCommand = IssueToken | RevokeToken


def check_issue(name: str, role: str, principal_type: str, user_id: str | None) -> None:
    rules = Rules()
    rules.text("name", name, min_length=1, max_length=100)
    if role not in ROLES:
        rules.fail("role", f"Input should be one of: {', '.join(ROLES)}", "enum", role, expected=list(ROLES))
    if principal_type not in PRINCIPAL_TYPES:
        rules.fail(
            "principal_type",
            f"Input should be one of: {', '.join(PRINCIPAL_TYPES)}",
            "enum",
            principal_type,
            expected=list(PRINCIPAL_TYPES),
        )
    rules.text("user_id", user_id, min_length=1, max_length=200)
    rules.check()


def decide(state: TokenState | None, command: TokenCommand) -> list[DomainEvent]:
    match command:
        case IssueToken():
            if state is not None:
                raise Conflict("Token already exists", token_id=command.token_id)
            check_issue(command.name, command.role, command.principal_type, command.user_id)
            return [
                TokenIssued(
                    token_id=command.token_id,
                    name=command.name,
                    role=command.role,
                    user_id=command.user_id,
                    principal_type=command.principal_type,
                    secret_hash=command.secret_hash,
                )
            ]
        case RevokeToken():
            assert state is not None, "the command layer answers 404 for a token that never existed"
            if not state.active:
                raise NotFound("token", state.token_id)
            return [TokenRevoked()]
    raise TypeError(f"not a token command: {command!r}")


def evolve(state: TokenState | None, event: DomainEvent, meta: EventMeta) -> TokenState:
    match event:
        case TokenIssued():
            return TokenState(
                token_id=event.token_id,
                org_id=meta.org_id,
                name=event.name,
                role=event.role,
                user_id=event.user_id,
                principal_type=event.principal_type,
                secret_hash=event.secret_hash,
                created_at=meta.occurred_at,
                created_by=meta.actor.principal_id,
            )
        case TokenRevoked():
            assert state is not None
            return msgspec.structs.replace(state, revoked_at=meta.occurred_at)
    raise TypeError(f"not a token event: {event!r}")


TOKEN = AggregateType("token", decide, evolve, creates=(IssueToken,))
