"""The raw event stream as auditors read it: every event of an org, in log order, and the hash chain.

Not a projection: it reads the event store itself (joined to the org index the store keeps with the
hash chain), so what auditors see is what is stored, less credential material (`domain.secrets.redacted`):
a token's secret hash is withheld and URLs are masked. The chain covers the stored bytes, so a reader cannot
recompute it from a redacted event; `verify` (the `events verify` command) does, from the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg

from domain.secrets import may_need_redaction, redacted
from eventstore.chain import GENESIS, event_hash
from eventstore.codec import Codec, Envelope
from eventstore.postgres import EVENTS_TABLE
from projections.pagination import counted_page


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
_encoder = msgspec.json.Encoder()
_COLUMNS = "i.position, i.stream_id, i.version, i.topic, i.hash, s.state"
_READ = (
    f"SELECT {_COLUMNS} FROM mm_event_index i JOIN {EVENTS_TABLE} s ON s.notification_id = i.position "
    "WHERE {where} ORDER BY i.position"
)


def _aggregate_type(codec: Codec, topic: str) -> str:
    """The aggregate the event's type belongs to, as the process's codec knows it (auditors see the stored data,
    undecoded, so a type this process was not built with is still shown)."""
    try:
        return codec.aggregate_of(topic)
    except KeyError:
        return "unknown"


def _event(codec: Codec, row) -> AuditEvent:
    position, stream_id, version, topic, digest, state = row
    state = bytes(state)
    envelope = _envelope.decode(state)
    return AuditEvent(
        position=position,
        event_id=f"{stream_id}@{version}",
        type=topic,
        aggregate_type=_aggregate_type(codec, topic),
        aggregate_id=stream_id,
        aggregate_version=version,
        occurred_at=envelope.meta.occurred_at,
        actor=msgspec.structs.asdict(envelope.meta.actor),
        trace_id=envelope.meta.trace_id,
        schema_version=envelope.v,
        data=_readable(envelope.data) if may_need_redaction(state) else envelope.data,
        hash=bytes(digest).hex(),
    )


def _readable(data: msgspec.Raw) -> msgspec.Raw:
    """Decoded and encoded again only for the few events the stored bytes say may hold credential material; the
    others are passed on as stored."""
    return msgspec.Raw(_encoder.encode(redacted(msgspec.json.decode(data))))


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
    conn: psycopg.AsyncConnection, codec: Codec, org_id: str, after: int, limit: int, query: Query = EVERYTHING
) -> list[AuditEvent]:
    where, params = _where(org_id, after, query)
    cursor = await conn.execute(_READ.format(where=where) + " LIMIT %s", [*params, limit])
    return [_event(codec, row) for row in await cursor.fetchall()]


async def page(
    conn: psycopg.AsyncConnection,
    codec: Codec,
    org_id: str,
    after: int,
    start: int,
    limit: int,
    query: Query = EVERYTHING,
) -> tuple[int, list[AuditEvent]]:
    """The events after `start` (a page's cursor) and how many the filter matches after `after` (what a list's
    `total` counts: every page of one read answers the same). Unfiltered, the count reads only the org's range of
    the (org_id, position) index (an index-only scan where the visibility map is current, as autovacuum keeps it
    on this append-only table); other filters also read the rows the range points at."""
    where, params = _where(org_id, after, query)
    page_where, page_params = _where(org_id, start, query)
    total, rows = await counted_page(
        conn,
        f"SELECT count(*) FROM mm_event_index i WHERE {where}",
        params,
        _READ.format(where=page_where) + " LIMIT %s",
        [*page_params, limit],
    )
    return total, [_event(codec, row) for row in rows]


def export(conn: psycopg.Connection, codec: Codec, org_id: str, after: int = 0):
    """Every event of the org after `after`, streamed with a server-side cursor: constant memory."""
    where, params = _where(org_id, after, EVERYTHING)
    with conn.cursor(name="mm_export") as cursor:
        cursor.itersize = 2000
        cursor.execute(_READ.format(where=where), params)
        for row in cursor:
            yield _event(codec, row)


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
