"""What every event carries besides its own data, and what each aggregate declares about its events.

Each aggregate module declares its event types and upcasters as constants on its `AggregateType`;
`domain.aggregates.AGGREGATES` lists every aggregate, and the codec (`eventstore.codec.Codec`) is built
from that list when a process starts. Nothing is registered by importing a module.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from domain.errors import CONTROL_CHARACTERS

# What an org id may be: it is also one token of the event subjects, so it has no dots.
ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")  # W3C trace context


def valid_id(stream_id: str) -> bool:
    """Whether a stream could have this id: one that could not has no events, and nobody need ask the store."""
    return 0 < len(stream_id) <= 200 and not CONTROL_CHARACTERS.search(stream_id)


def new_trace_id() -> str:
    """A trace id for work no caller traced: 32 hex digits, the W3C trace context's shape."""
    return secrets.token_hex(16)


def trace_id_from(traceparent: str | None) -> str:
    """The trace id of a `traceparent` header's value, or a new one when it is absent, malformed or all zeros."""
    match = TRACEPARENT.fullmatch((traceparent or "").strip())
    return match.group(1) if match and match.group(1) != "0" * 32 else new_trace_id()


class Actor(msgspec.Struct, frozen=True, gc=False):
    """Who caused an event: the principal behind the token, the user it acts for, the token used."""

    principal_type: str
    principal_id: str
    user_id: str | None = None
    token_id: str | None = None


SYSTEM_ACTOR = Actor(principal_type="system", principal_id="mechamental")


class EventMeta(msgspec.Struct, frozen=True, gc=False):
    org_id: str
    actor: Actor
    trace_id: str
    occurred_at: datetime


class DomainEvent(msgspec.Struct, frozen=True, gc=False):
    """Base of every event. Subclasses are named in the past tense and listed in their aggregate's `events`."""


class Upcaster(NamedTuple):
    """How a stored shape of the event `topic` at schema version `from_version` becomes its shape at the next."""

    topic: str
    from_version: int
    step: Callable[[dict[str, Any]], dict[str, Any]]


class AggregateType(NamedTuple):
    """What the command layer needs to run any aggregate: its name, its pure functions, its creating commands,
    and what the codec needs to read its streams: its event types (a type's name is its stored topic) and the
    upcasters of their older stored shapes."""

    name: str
    decide: Callable[[Any, Any], list[DomainEvent]]
    evolve: Callable[[Any, DomainEvent, EventMeta], Any]
    creates: tuple[type, ...]
    events: tuple[type[DomainEvent], ...] = ()
    upcasters: tuple[Upcaster, ...] = ()


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from the log, with its place in it."""

    position: int
    stream_id: str
    version: int
    meta: EventMeta
    event: DomainEvent
    aggregate: str  # the name of the aggregate whose events are of this type

    @property
    def type(self) -> str:
        return type(self.event).__name__
