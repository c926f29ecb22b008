"""API tokens: issue, revoke, and authenticate a presented bearer token.

A token reads `<token_id>.<secret>`. Only the SHA-256 of the secret is recorded (the secret has
256 random bits, so a slow hash would add nothing); presented secrets are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

import psycopg

from commands.unit_of_work import CommandRunner, Context, Outcome, UnitOfWork, new_id
from domain.access import may_issue
from domain.errors import Forbidden
from domain.token import TOKEN, IssueToken, RevokeToken, TokenState
from projections.stored import stream_versions


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(
    commands: CommandRunner,
    ctx: Context,
    *,
    name: str,
    role: str,
    user_id: str | None = None,
    principal_type: str = "user",
) -> tuple[Outcome, str]:
    token_id = new_id("tok")
    secret = secrets.token_urlsafe(32)
    command = IssueToken(
        token_id=token_id,
        name=name,
        role=role,
        secret_hash=hash_secret(secret),
        user_id=user_id,
        principal_type=principal_type,
    )
    outcome = commands.create(TOKEN, token_id, command, ctx)
    return outcome, f"{token_id}.{secret}"


def revoke_token(commands: CommandRunner, ctx: Context, token_id: str, revoker_role: str | None) -> Outcome:
    """`revoker_role` None is the root token; otherwise only a role that may issue a token may revoke it."""

    def use_case(uow: UnitOfWork) -> TokenState:
        token = uow.load(TOKEN, token_id)
        if token is not None and revoker_role is not None and not may_issue(revoker_role, token.role):
            raise Forbidden(f"token:delete:{token.role}")
        return uow.decide(TOKEN, token_id, RevokeToken())

    return Outcome(*commands.run(ctx, use_case))


def _token_id_of(presented: str) -> str | None:
    token_id, dot, _ = presented.partition(".")
    return token_id if dot and token_id.startswith("tok_") and len(token_id) <= 64 else None


class TokenVerifier:
    """Checks presented tokens against the event store (the truth, so a new token works at once).

    Verified tokens are cached and stay fresh for `ttl` seconds from the last time the store confirmed
    their stream had not moved. `refresh` confirms every cached token in one query, off the request path,
    so a busy API reads a token's stream only when it first sees it or when the stream changes. A
    revocation made through this process evicts at once; one made through another process takes effect
    within `ttl` (at the next refresh that sees it, or when the entry runs out unconfirmed).
    """

    def __init__(self, commands: CommandRunner, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._commands = commands
        self.ttl = ttl
        self._clock = clock  # monotonic seconds; a test passes one it moves itself
        self._cache: dict[str, tuple[float, TokenState, int]] = {}  # token id -> (fresh until, state, version)
        self._lock = threading.Lock()

    def verify(self, presented: str) -> TokenState | None:
        """Checks a token, reading the store when it is not cached (blocking I/O)."""
        return self._check(presented, load=True)

    def verify_cached(self, presented: str) -> TokenState | None:
        """Checks a token against the cache only (no I/O); None also when it is not cached."""
        return self._check(presented, load=False)

    def needs_lookup(self, presented: str) -> bool:
        """Whether checking `presented` would read the store: a well-formed token whose id is not cached."""
        token_id = _token_id_of(presented)
        return token_id is not None and self._cached(token_id) is None

    def _check(self, presented: str, *, load: bool) -> TokenState | None:
        token_id = _token_id_of(presented)
        if token_id is None:
            return None
        secret = presented.partition(".")[2]
        state = self._cached(token_id)
        if state is None and load:
            state = self._load(token_id)
        if state is None:
            return None
        if not hmac.compare_digest(state.secret_hash, hash_secret(secret)):
            return None
        return state if state.active else None

    def forget(self, token_id: str) -> None:
        with self._lock:
            self._cache.pop(token_id, None)

    async def refresh(self, conn: psycopg.AsyncConnection) -> None:
        """Confirms every cached token in one query: one whose stream has not moved stays fresh for another
        `ttl` from when the query started; one whose stream moved is dropped, to be loaded again when next
        presented."""
        with self._lock:
            known = {token_id: version for token_id, (_, _, version) in self._cache.items()}
        if not known:
            return
        asked_at = self._clock()  # the query sees every write committed before this
        current = await stream_versions(conn, list(known))
        with self._lock:
            for token_id, version in known.items():
                hit = self._cache.get(token_id)
                if hit is None or hit[2] != version:
                    continue  # dropped or loaded again meanwhile
                if current.get(token_id) == version:
                    self._cache[token_id] = (max(hit[0], asked_at + self.ttl), hit[1], version)
                else:
                    del self._cache[token_id]

    def _cached(self, token_id: str) -> TokenState | None:
        with self._lock:
            hit = self._cache.get(token_id)
        if hit and hit[0] > self._clock():
            return hit[1]
        return None

    def _load(self, token_id: str) -> TokenState | None:
        loaded_at = self._clock()
        state, version = self._commands.load(TOKEN, token_id, org_id=None)
        if state is None:
            return None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token_id] = (loaded_at + self.ttl, state, version)
        return state
