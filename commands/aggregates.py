"""Run any command against any aggregate: load, decide, save, with optimistic concurrency."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

import msgspec
from eventsourcing.persistence import StoredEvent

from commands.store import ConcurrencyConflict, EventStore
from domain.errors import Conflict, NotFound
from domain.events import Actor, AggregateType, EventMeta, decode, encode

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


class Aggregates:
    """The one place where commands become stored events."""

    MAX_ATTEMPTS = 5

    def __init__(self, store: EventStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    def load(self, kind: AggregateType, stream_id: str, org_id: str | None) -> tuple[Any, int]:
        """The current state (None when there is none, or it belongs to another org) and its version."""
        state, version = None, 0
        for stored in self.store.load(stream_id):
            meta, event = decode(stored.topic, stored.state)
            state, version = kind.evolve(state, event, meta), stored.originator_version
        if state is not None and org_id is not None and state.org_id != org_id:
            return None, 0
        return state, version

    def execute(self, kind: AggregateType, stream_id: str, command: Any, ctx: Context) -> Outcome:
        for _ in range(self.MAX_ATTEMPTS):
            state, version = self.load(kind, stream_id, ctx.org_id)
            if state is None and not isinstance(command, kind.creates):
                raise NotFound(kind.name, stream_id)
            events = kind.decide(state, command)
            if not events:
                return Outcome(state, self.store.head())
            meta = EventMeta(ctx.org_id, ctx.actor, ctx.trace_id, self.clock())
            stored = []
            for offset, event in enumerate(events, start=1):
                topic, data = encode(event, meta)
                stored.append(StoredEvent(stream_id, version + offset, topic, data))
                state = kind.evolve(state, event, meta)
            try:
                positions = self.store.append(stored)
            except ConcurrencyConflict:
                continue  # someone else wrote first: decide again on the newer state
            return Outcome(state, positions[-1])
        raise Conflict(f"The {kind.name} kept changing while this request ran; try again", resource_id=stream_id)
