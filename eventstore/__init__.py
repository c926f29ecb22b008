"""The event store: the `EventStore` protocol and what an append is (`protocol`), the codec that turns domain
events into stored ones and back (`codec`), which appends can share a commit (`batching`), and the stores:
PostgreSQL with group commit and the hash chain (`postgres`, `chain`), in memory (`memory`), and an overlay
that keeps appends instead of writing them (`overlay`). Knows the domain's event base types, nothing else of
it: a process hands it the aggregates it knows (`Codec(AGGREGATES)`)."""

from eventstore.codec import Codec
from eventstore.memory import InMemoryEventStore
from eventstore.overlay import Overlay
from eventstore.protocol import Append, Claim, ClaimTaken, CommitterStopped, ConcurrencyConflict, EventStore

__all__ = [
    "Append",
    "Claim",
    "ClaimTaken",
    "Codec",
    "CommitterStopped",
    "ConcurrencyConflict",
    "EventStore",
    "InMemoryEventStore",
    "Overlay",
]
