"""How domain events are written to and read from the log, for the event types the codec was built with.

An event is stored as its type name (the store's topic) and a JSON envelope
`{"v": schema version, "meta": EventMeta, "data": the event}`. Older shapes are upcast on the way in.

A process builds one codec when it starts, from the aggregates it knows (`Codec(AGGREGATES)`), and hands
it to whatever reads events (the stores, the relay, the subscriptions, the rebuild, the audit); nothing is
registered as a side effect of importing a module, so what a process can read is what it was given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from eventsourcing.persistence import StoredEvent

from domain.events import AggregateType, DomainEvent, EventMeta, Recorded

SCHEMA_VERSION = 1


class Envelope(msgspec.Struct, frozen=True, gc=False):
    meta: EventMeta
    data: msgspec.Raw
    v: int = 0  # the event data's schema version; events from before versioning have none


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)


def decode_meta(state: bytes) -> EventMeta:
    """An envelope's metadata, whatever its event type (the relay needs only the org)."""
    return _envelope_decoder.decode(state).meta


class Codec:
    """The registry of event types (topic -> type and aggregate) and their upcasters, with the encoding."""

    def __init__(self, aggregates: Iterable[AggregateType]) -> None:
        self.aggregates = tuple(aggregates)
        self._types: dict[str, type[DomainEvent]] = {}
        self._aggregate: dict[str, str] = {}
        self._upcasters: dict[tuple[str, int], Any] = {}
        for kind in self.aggregates:
            for event_type in kind.events:
                topic = event_type.__name__
                if self._aggregate.setdefault(topic, kind.name) != kind.name:
                    raise ValueError(f"event type {topic} is declared by {self._aggregate[topic]} and {kind.name}")
                self._types[topic] = event_type
            for upcaster in kind.upcasters:
                self._upcasters[(upcaster.topic, upcaster.from_version)] = upcaster.step
        # Built on first use: a process builds only the decoders of the topics it meets.
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}

    def encode(self, event: DomainEvent, meta: EventMeta) -> tuple[str, bytes]:
        topic = type(event).__name__
        if topic not in self._types:  # written, it could not be read back
            raise KeyError(f"event type {topic} is not one this codec was built with")
        return topic, _encoder.encode(Envelope(meta, msgspec.Raw(_encoder.encode(event)), SCHEMA_VERSION))

    def decode(self, topic: str, state: bytes) -> tuple[EventMeta, DomainEvent]:
        """Reads a stored event as the current code knows it, upcasting older shapes on the way."""
        envelope = _envelope_decoder.decode(state)
        if envelope.v == SCHEMA_VERSION:
            decoder = self._decoders.get(topic)
            if decoder is None:
                decoder = self._decoders[topic] = msgspec.json.Decoder(self._types[topic])
            return envelope.meta, decoder.decode(envelope.data)
        data = msgspec.json.decode(envelope.data)
        for version in range(envelope.v, SCHEMA_VERSION):
            if step := self._upcasters.get((topic, version)):
                data = step(data)
        return envelope.meta, msgspec.convert(data, self._types[topic])

    def aggregate_of(self, topic: str) -> str:
        """The aggregate whose events are of this type (KeyError for a type this codec does not know)."""
        return self._aggregate[topic]

    def recorded(self, position: int, stream_id: str, version: int, topic: str, state: bytes) -> Recorded:
        meta, event = self.decode(topic, state)
        return Recorded(position, stream_id, version, meta, event, self._aggregate[topic])

    def fold(self, kind: AggregateType, history: Sequence[StoredEvent]) -> tuple[Any, int]:
        """The state a stream's events add up to, and its version; (None, 0) for a stream of another kind (a
        workspace id passed as a token id, say)."""
        if history and self._aggregate.get(history[0].topic) != kind.name:
            return None, 0
        state, version = None, 0
        for stored in history:
            meta, event = self.decode(stored.topic, stored.state)
            state, version = kind.evolve(state, event, meta), stored.originator_version
        return state, version
