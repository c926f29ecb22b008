"""Reading activity: feeds and searches (newest first, filtered, paged by time) and summaries from the hourly
rollups."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec
import psycopg

from activity.records import ActivityRecord
from projections.pagination import counted_page

T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder] = {ActivityRecord: msgspec.json.Decoder(ActivityRecord)}


class Filters(msgspec.Struct, frozen=True):
    workspace_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    resource_id: str | None = None
    augmentation_id: str | None = None
    action: str | None = None
    resource_type: str | None = None
    success: bool | None = None
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


_COLUMN_FILTERS = {
    "workspace_id": "workspace_id = %s",
    "app_id": "app_id = %s",
    "user_id": "user_id = %s",
    "resource_id": "resource_id = %s",
    "augmentation_id": "augmentation_id = %s",
    "action": "action = %s",
    "resource_type": "resource_type = %s",
    "success": "success = %s",
    "min_duration_ms": "duration_ms >= %s",
    "max_duration_ms": "duration_ms <= %s",
    "start_time": "ts >= %s",
    "end_time": "ts <= %s",
}


async def feed(
    conn: psycopg.AsyncConnection,
    org_id: str,
    filters: Filters,
    after: tuple[int, str] | None,
    limit: int,
    shape: type[T] = ActivityRecord,
) -> tuple[int, list[T]]:
    """Newest first; `after` is the (microseconds, id) of the last record a previous page showed. Records are
    decoded straight into `shape` (a Struct with some of the record's fields, `timestamp` and `id` among
    them), which costs a fraction of decoding whole records and copying them over
    (BENCHMARKS.md, "Appendix: why the code is the way it is")."""
    where, params = ["org_id = %s"], [org_id]
    for field, clause in _COLUMN_FILTERS.items():
        value = getattr(filters, field)
        if value is not None:
            where.append(clause)
            params.append(value)
    condition = " AND ".join(where)
    page_condition, page_params = condition, list(params)
    if after is not None:
        page_condition += " AND (ts, id) < (%s, %s)"
        page_params += [datetime.fromtimestamp(after[0] / 1_000_000, UTC), after[1]]
    total, rows = await counted_page(
        conn,
        f"SELECT count(*) FROM activity WHERE {condition}",
        params,
        f"SELECT record FROM activity WHERE {page_condition} ORDER BY ts DESC, id DESC LIMIT %s",
        [*page_params, limit + 1],
    )
    decoder = _decoders.get(shape) or _decoders.setdefault(shape, msgspec.json.Decoder(shape))
    return total, [decoder.decode(row[0]) for row in rows]


def key_of(record) -> tuple[int, str]:
    ts = record.timestamp.astimezone(UTC)
    micros = (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return micros, record.id


class Summary(msgspec.Struct):
    total_requests: int
    successful_requests: int
    failed_requests: int
    avg_duration_ms: float
    total_tokens_used: int
    by_action: dict[str, int]
    by_resource: dict[str, int]
    start_time: datetime
    end_time: datetime


async def summary(
    conn: psycopg.AsyncConnection, org_id: str, scope: str, scope_id: str, hours: int, now: datetime
) -> Summary:
    """From the hourly rollups: the current hour and the `hours - 1` before it."""
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    cursor = await conn.execute(
        "SELECT action, resource_type, sum(requests)::bigint, sum(successes)::bigint, sum(duration_ms)::float8, "
        "sum(tokens)::bigint "
        "FROM activity_hourly WHERE org_id = %s AND scope = %s AND scope_id = %s AND hour >= %s "
        "GROUP BY action, resource_type",
        (org_id, scope, scope_id, start),
    )
    by_action: Counter[str] = Counter()
    by_resource: Counter[str] = Counter()
    requests = successes = tokens = 0
    duration = 0.0
    for action, resource_type, n, ok, ms, used in await cursor.fetchall():
        by_action[action] += n
        by_resource[resource_type or "none"] += n
        requests, successes, duration, tokens = requests + n, successes + ok, duration + ms, tokens + used
    return Summary(
        total_requests=requests,
        successful_requests=successes,
        failed_requests=requests - successes,
        avg_duration_ms=round(duration / requests, 3) if requests else 0.0,
        total_tokens_used=tokens,
        by_action=dict(by_action),
        by_resource=dict(by_resource),
        start_time=start,
        end_time=now,
    )
