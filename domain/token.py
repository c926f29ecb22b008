"""The API token aggregate. Only a hash of the secret is ever recorded."""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.access import PRINCIPAL_TYPES, ROLES
from domain.errors import Conflict, Forbidden, NotFound, Rules
from domain.events import AggregateType, DomainEvent, EventMeta


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


EVENTS = (TokenIssued, TokenRevoked)

TokenCommand = IssueToken | RevokeToken


# Ids the system itself acts as (the root token's user and principal, the executor, the system actor of scheduled
# fires and provisioning): a token named so would read as them in `created_by` and every record.
RESERVED_USER_IDS = frozenset({"root", "executor", "system", "mechamental"})


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
    if user_id is not None and user_id.strip().casefold() in RESERVED_USER_IDS:
        rules.fail(
            "user_id",
            f"{user_id!r} is reserved for the system's own principals: {', '.join(sorted(RESERVED_USER_IDS))}",
            "value_error",
            user_id,
            reserved=sorted(RESERVED_USER_IDS),
        )
    rules.check()


NAME_ANOTHER_USER = "token:create:other_user"


def user_of_new_token(
    issuer_role: str | None, issuer_user_id: str | None, principal_type: str, user_id: str | None
) -> str | None:
    """Whom a new token acts as, so that no token can act as someone its issuer is not. A user token is for
    its issuer's user unless it names one; a service token names no user unless asked to, and is then its
    own principal (its token id). Only an owner, or the root token (`issuer_role` None), may name another
    user: an admin naming the owner would otherwise take on the owner's name in every record and
    `created_by`."""
    if user_id is None:
        return issuer_user_id if principal_type == "user" and issuer_role is not None else None
    if issuer_role is None or issuer_role == "owner" or user_id == issuer_user_id:
        return user_id
    raise Forbidden(NAME_ANOTHER_USER)


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


TOKEN = AggregateType("token", decide, evolve, creates=(IssueToken,), events=EVENTS)
