"""What every event carries besides its own data, and how events are written to and read from the log.

An event is stored as its type name (the store's topic) and a JSON envelope
`{"v": schema version, "meta": EventMeta, "data": the event}`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

import msgspec


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
    """Base of every event. Subclasses are named in the past tense and registered with `register`."""

    aggregate: ClassVar[str] = ""


class AggregateType(NamedTuple):
    """What the command layer needs to run any aggregate: its name, its pure functions, its creating commands."""

    name: str
    decide: Callable[[Any, Any], list[DomainEvent]]
    evolve: Callable[[Any, DomainEvent, EventMeta], Any]
    creates: tuple[type, ...]


class Envelope(msgspec.Struct, frozen=True, gc=False):
    meta: EventMeta
    data: msgspec.Raw
    v: int = 0  # the event data's schema version; events from before versioning have none


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from the log, with its place in it."""

    position: int
    stream_id: str
    version: int
    meta: EventMeta
    event: DomainEvent

    @property
    def type(self) -> str:
        return type(self.event).__name__


EVENT_TYPES: dict[str, type[DomainEvent]] = {}
SCHEMA_VERSION = 1
_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)
_data_decoders: dict[str, msgspec.json.Decoder[Any]] = {}


def register(aggregate: str, *event_types: type[DomainEvent]) -> None:
    for event_type in event_types:
        event_type.aggregate = aggregate
        EVENT_TYPES[event_type.__name__] = event_type
        _data_decoders[event_type.__name__] = msgspec.json.Decoder(event_type)


def encode(event: DomainEvent, meta: EventMeta) -> tuple[str, bytes]:
    data = msgspec.Raw(_encoder.encode(event))
    return type(event).__name__, _encoder.encode(Envelope(meta, data, SCHEMA_VERSION))


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(topic: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Registers how a stored shape of an event at `from_version` becomes its shape at the next version."""

    def register_upcaster(function: Upcaster) -> Upcaster:
        UPCASTERS[(topic, from_version)] = function
        return function

    return register_upcaster


def decode(topic: str, state: bytes) -> tuple[EventMeta, DomainEvent]:
    """Reads a stored event as the current code knows it, upcasting older shapes on the way."""
    envelope = _envelope_decoder.decode(state)
    if envelope.v == SCHEMA_VERSION:
        return envelope.meta, _data_decoders[topic].decode(envelope.data)
    data = msgspec.json.decode(envelope.data)
    for version in range(envelope.v, SCHEMA_VERSION):
        if step := UPCASTERS.get((topic, version)):
            data = step(data)
    return envelope.meta, msgspec.convert(data, EVENT_TYPES[topic])


def decode_meta(state: bytes) -> EventMeta:
    return _envelope_decoder.decode(state).meta


def aggregate_of(topic: str) -> str:
    return EVENT_TYPES[topic].aggregate
