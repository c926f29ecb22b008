"""The raw event stream as auditors read it: every event of an org, in log order, and the hash chain.

Not a projection: it reads the event store itself (joined to the org index the store keeps with the
hash chain), so what auditors see is what is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg

from commands.chain import GENESIS, event_hash
from commands.store import EVENTS_TABLE
from domain.events import EVENT_TYPES, Envelope


class AuditEvent(msgspec.Struct):
    position: int
    event_id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime
    actor: dict[str, Any]
    trace_id: str
    schema_version: int
    data: msgspec.Raw
    hash: str


class Query(msgspec.Struct, frozen=True):
    type: str | None = None
    aggregate_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


_envelope = msgspec.json.Decoder(Envelope)
_COLUMNS = "i.position, i.stream_id, i.version, i.topic, i.hash, s.state"


def _event(row) -> AuditEvent:
    position, stream_id, version, topic, digest, state = row
    envelope = _envelope.decode(bytes(state))
    event_type = EVENT_TYPES.get(topic)
    return AuditEvent(
        position=position,
        event_id=f"{stream_id}@{version}",
        type=topic,
        aggregate_type=event_type.aggregate if event_type else "unknown",
        aggregate_id=stream_id,
        aggregate_version=version,
        occurred_at=envelope.meta.occurred_at,
        actor=msgspec.structs.asdict(envelope.meta.actor),
        trace_id=envelope.meta.trace_id,
        schema_version=envelope.v,
        data=envelope.data,
        hash=bytes(digest).hex(),
    )


def _where(org_id: str, after: int, query: Query) -> tuple[str, list]:
    clauses, params = ["i.org_id = %s", "i.position > %s"], [org_id, after]
    for clause, value in (
        ("i.topic = %s", query.type),
        ("i.stream_id = %s", query.aggregate_id),
        ("i.occurred_at >= %s", query.start_time),
        ("i.occurred_at <= %s", query.end_time),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses), params


EVERYTHING = Query()


async def events(
    conn: psycopg.AsyncConnection, org_id: str, after: int, limit: int, query: Query = EVERYTHING
) -> list[AuditEvent]:
    where, params = _where(org_id, after, query)
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM mm_event_index i JOIN {EVENTS_TABLE} s ON s.notification_id = i.position "
        f"WHERE {where} ORDER BY i.position LIMIT %s",
        [*params, limit],
    )
    return [_event(row) for row in await cursor.fetchall()]


def export(conn: psycopg.Connection, org_id: str, after: int = 0):
    """Every event of the org after `after`, streamed with a server-side cursor: constant memory."""
    where, params = _where(org_id, after, EVERYTHING)
    with conn.cursor(name="mm_export") as cursor:
        cursor.itersize = 2000
        cursor.execute(
            f"SELECT {_COLUMNS} FROM mm_event_index i JOIN {EVENTS_TABLE} s "
            f"ON s.notification_id = i.position WHERE {where} ORDER BY i.position",
            params,
        )
        for row in cursor:
            yield _event(row)


class Broken(msgspec.Struct):
    position: int
    problem: str  # altered | removed | unindexed


def verify(conn: psycopg.Connection, org_id: str | None = None) -> tuple[int, Broken | None]:
    """Recomputes the chain; returns how many events were checked and the first broken one, if any.

    Each event's hash is recomputed from its stored content and the stored hash before it, so the first
    event altered, removed or moved is the one named."""
    checked, previous = 0, GENESIS
    with conn.cursor(name="mm_verify") as cursor:
        cursor.itersize = 5000
        cursor.execute(
            f"SELECT coalesce(i.position, s.notification_id), i.org_id, i.hash, s.originator_id, "
            f"s.originator_version, s.topic, s.state FROM mm_event_index i FULL JOIN {EVENTS_TABLE} s "
            "ON s.notification_id = i.position ORDER BY 1"
        )
        for position, org, digest, stream_id, version, topic, state in cursor:
            mine = org_id is None or org == org_id
            if digest is None:
                return checked, Broken(position, "unindexed")  # an event written around the chain
            if state is None:
                if mine:
                    return checked, Broken(position, "removed")
            elif mine and event_hash(previous, position, stream_id, version, topic, bytes(state)) != bytes(digest):
                return checked, Broken(position, "altered")
            checked += mine
            previous = bytes(digest)
    return checked, None
