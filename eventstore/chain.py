"""The tamper-evident hash chain over the event log.

Every event's hash covers its content and the hash of the event before it, so altering, removing or
reordering any stored event breaks the chain from that event on. A trigger on the PostgreSQL table (migrations/0002)
extends the chain inside every statement that inserts events, so nothing can write events around it;
`mechamental events verify` recomputes it (`projections.audit.verify`). The chain belongs to the
PostgreSQL store, where auditors read it; the in-memory store keeps none.
"""

from __future__ import annotations

import hashlib

GENESIS = b"\x00" * 32


def event_hash(previous: bytes, position: int, stream_id: str, version: int, topic: str, state: bytes) -> bytes:
    digest = hashlib.sha256(previous)
    digest.update(f"{position}|{stream_id}|{version}|{topic}|".encode())
    digest.update(state)
    return digest.digest()
