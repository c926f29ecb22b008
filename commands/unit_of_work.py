"""Commands run in units of work: load, decide, save, with optimistic concurrency.

A use case runs inside a `UnitOfWork`: it loads the aggregates it needs, lets them decide, and stages
their events and any uniqueness claims. At commit, every stream it wrote must still be at the version
it loaded (the store's primary key) and every stream it only read must not have moved (checked under
the store's table lock), or `CommandRunner` runs the whole use case again on fresh state, up to a few
times, before answering 409.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from eventsourcing.persistence import StoredEvent

from domain.errors import Conflict, NotFound
from domain.events import Actor, AggregateType, DomainEvent, EventMeta, valid_id
from eventstore import Append, Claim, ClaimTaken, ConcurrencyConflict, EventStore

Clock = Callable[[], datetime]
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A sortable, unguessable id: a millisecond timestamp then 80 random bits, both in hex."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


class Context(msgspec.Struct, frozen=True):
    """Who issues a command, for which org, under which trace."""

    org_id: str
    actor: Actor
    trace_id: str


class Outcome(msgspec.Struct, frozen=True):
    state: Any
    position: int


class UnitOfWork:
    def __init__(self, store: EventStore, ctx: Context, now: datetime) -> None:
        self.store = store
        self.ctx = ctx
        self.meta = EventMeta(ctx.org_id, ctx.actor, ctx.trace_id, now)
        self._loaded: dict[str, tuple[AggregateType, Any, int]] = {}
        self._pending: dict[str, list[DomainEvent]] = {}
        self._claims: list[Claim] = []
        self._releases: list[Claim] = []
        self._conflicts: dict[tuple[str, str], Conflict] = {}

    def load(self, kind: AggregateType, stream_id: str) -> Any:
        """The current state in this org, or None (never existed, or another org's)."""
        if stream_id not in self._loaded:
            if not valid_id(stream_id):  # no such stream can exist: do not ask the database
                return None
            state, version = self.store.codec.fold(kind, self.store.load(stream_id))
            if state is not None and state.org_id != self.ctx.org_id:
                state = None  # another org's stream: as if it did not exist, and never written
            self._loaded[stream_id] = (kind, state, version)
        return self._loaded[stream_id][1]

    def require(self, kind: AggregateType, stream_id: str) -> Any:
        state = self.load(kind, stream_id)
        if state is None or getattr(state, "deleted", False):
            raise NotFound(kind.name, stream_id)
        return state

    def decide(self, kind: AggregateType, stream_id: str, command: Any) -> Any:
        """Lets the aggregate decide; stages its events and returns its new state."""
        state = self.load(kind, stream_id)
        if state is None and not isinstance(command, kind.creates):
            raise NotFound(kind.name, stream_id)
        events = kind.decide(state, command)
        for event in events:
            state = kind.evolve(state, event, self.meta)
        if events:
            _, _, version = self._loaded[stream_id]
            self._loaded[stream_id] = (kind, state, version)
            self._pending.setdefault(stream_id, []).extend(events)
        return state

    def create(self, kind: AggregateType, stream_id: str, command: Any) -> Any:
        """`decide` on a stream whose id this command just made up (`new_id`): it cannot have history, so
        nothing is read. Should it exist after all, the store's key on (stream, version) refuses the append."""
        self._loaded.setdefault(stream_id, (kind, None, 0))
        return self.decide(kind, stream_id, command)

    def pending(self, stream_id: str) -> list[DomainEvent]:
        """The events this unit of work has staged for a stream so far."""
        return list(self._pending.get(stream_id, ()))

    def claim(self, scope: str, key: str, owner: str, conflict: Conflict) -> None:
        self._claims.append(Claim(scope, key, owner))
        self._conflicts[(scope, key)] = conflict

    def release(self, scope: str, key: str, owner: str) -> None:
        self._releases.append(Claim(scope, key, owner))

    def commit(self) -> int | None:
        if not self._pending:
            return None
        stored, expected, encode = [], {}, self.store.codec.encode
        for stream_id, (_, _, version) in self._loaded.items():
            events = self._pending.get(stream_id)
            if not events:
                expected[stream_id] = version
                continue
            for offset, event in enumerate(events, start=1):
                topic, data = encode(event, self.meta)
                stored.append(StoredEvent(stream_id, version + offset, topic, data))
        try:
            return self.store.append(Append(stored, expected, self._claims, self._releases))[-1]
        except ClaimTaken as taken:
            raise self._conflicts.get((taken.scope, taken.key)) or Conflict(str(taken)) from None


class CommandRunner:
    """The one place where commands become stored events."""

    MAX_ATTEMPTS = 5

    def __init__(
        self, store: EventStore, clock: Clock = utc_now, on_command: Callable[[float], None] | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_command = on_command  # given each committed command's seconds (/metrics)

    def run(self, ctx: Context, use_case: Callable[[UnitOfWork], T]) -> tuple[T, int]:
        """Runs `use_case` in a fresh unit of work until it commits; returns its result and position."""
        started = time.perf_counter()
        for _ in range(self.MAX_ATTEMPTS):
            uow = UnitOfWork(self.store, ctx, self.clock())
            result = use_case(uow)
            try:
                position = uow.commit()
            except ConcurrencyConflict:
                continue  # someone else wrote first: decide again on the newer state
            if self.on_command is not None:
                self.on_command(time.perf_counter() - started)
            return result, position if position is not None else self.store.head()
        raise Conflict("The resource kept changing while this request ran; try again")

    def execute(self, kind: AggregateType, stream_id: str, command: Any, ctx: Context) -> Outcome:
        state, position = self.run(ctx, lambda uow: uow.decide(kind, stream_id, command))
        return Outcome(state, position)

    def create(self, kind: AggregateType, stream_id: str, command: Any, ctx: Context) -> Outcome:
        """`execute` for a stream id the caller just made up with `new_id`."""
        state, position = self.run(ctx, lambda uow: uow.create(kind, stream_id, command))
        return Outcome(state, position)

    def load(self, kind: AggregateType, stream_id: str, org_id: str | None) -> tuple[Any, int]:
        """A read outside any command: the state (None when absent or another org's) and its version."""
        state, version = self.store.codec.fold(kind, self.store.load(stream_id))
        if state is not None and org_id is not None and state.org_id != org_id:
            return None, 0
        return state, version
