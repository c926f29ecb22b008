"""Storing activity: records and their hourly rollups, idempotently, in day partitions that retention drops whole.

Records arrive in batches (from JetStream through the consumer, or straight from a publisher whose NATS is down)
and are stored idempotently: a record id is stored once, and only records stored for the first time move the
rollups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, timedelta
from typing import Any

import msgspec
import psycopg

from activity.records import LEGACY_ACTIONS, ActivityRecord, encode
from projections.batches import Staging

log = logging.getLogger(__name__)


async def ensure_partitions(conn: psycopg.AsyncConnection, days: set[date], known: set[date] | None = None) -> None:
    """Makes the day partitions `days` need. `known` (the caller's, kept across calls) holds the days already
    seen to exist, sparing the catalog query; a caller whose write fails clears it, in case a day it holds was
    rolled back or dropped."""
    unknown = days - known if known is not None else days
    if not unknown:
        return
    names = {f"activity_{day:%Y%m%d}": day for day in unknown}
    cursor = await conn.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", (list(names),))
    missing = set(names) - {row[0] for row in await cursor.fetchall()}
    if missing:
        # Writers (the projector, an API process writing while NATS is down) may race to create one day.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mechamental.activity.partitions'))")
        for name in sorted(missing):
            day = names[name]
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF activity FOR VALUES FROM ('{day}') "
                f"TO ('{day + timedelta(days=1)}')"
            )
    if known is not None:
        known |= unknown


_RECORDS = Staging(
    "activity",
    {
        "id": "text",
        "org_id": "text",
        "ts": "timestamptz",
        "workspace_id": "text",
        "app_id": "text",
        "user_id": "text",
        "action": "text",
        "resource_type": "text",
        "resource_id": "text",
        "augmentation_id": "text",
        "success": "bool",
        "duration_ms": "float8",
        "record": "bytea",
    },
)
_ROLLUPS = Staging(
    "activity_hourly",
    {
        "org_id": "text",
        "scope": "text",
        "scope_id": "text",
        "hour": "timestamptz",
        "action": "text",
        "resource_type": "text",
        "requests": "int8",
        "successes": "int8",
        "duration_ms": "float8",
        "tokens": "int8",
    },
)


async def store(
    conn: psycopg.AsyncConnection, records: list[ActivityRecord], known_days: set[date] | None = None
) -> int:
    """Stores new records and rolls them up, in the caller's transaction; returns how many were new.
    Both writes are one merge each (`Staging`), whatever the batch's size."""
    if not records:
        return 0
    await ensure_partitions(conn, {r.timestamp.astimezone(UTC).date() for r in records}, known_days)
    unique = [storable(r) for r in {r.id: r for r in records}.values()]  # a batch may repeat a record: count it once
    inserted = await _RECORDS.merge(
        conn,
        [_row(r) for r in unique],
        "INSERT INTO activity ({columns}) SELECT {columns} FROM moved ON CONFLICT DO NOTHING RETURNING id",
    )
    new_ids = {row[0] for row in inserted}
    rollups = _rollups([r for r in unique if r.id in new_ids])
    # One row per key, so one statement may add them all; the key order keeps concurrent writers from deadlocking.
    await _ROLLUPS.merge(
        conn,
        [(*key, *values) for key, values in sorted(rollups.items())],
        "INSERT INTO activity_hourly AS h ({columns}) SELECT {columns} FROM moved "
        "ON CONFLICT (org_id, scope, scope_id, hour, action, resource_type) DO UPDATE SET "
        "requests = h.requests + EXCLUDED.requests, successes = h.successes + EXCLUDED.successes, "
        "duration_ms = h.duration_ms + EXCLUDED.duration_ms, tokens = h.tokens + EXCLUDED.tokens",
    )
    return len(new_ids)


def refused_for_content(error: Exception) -> bool:
    """Whether the database (or the driver, encoding a value) refused what the records hold: a data exception
    (SQLSTATE class 22), a broken constraint (23), a program limit such as an index entry too large (54), or a
    value Python could not encode. Anything else (the connection, a failover to a read-only standby, a timeout,
    a lock, a missing table) may pass, and the same records are tried again later, none left out."""
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        return state[:2] in ("22", "23", "54") or (not state and isinstance(error, psycopg.DataError))
    return isinstance(error, ValueError | TypeError | OverflowError)


async def store_batch(
    conn: psycopg.AsyncConnection,
    records: list[ActivityRecord],
    known_days: set[date],
    then: Callable[[psycopg.AsyncConnection], Any] | None = None,
) -> list[ActivityRecord]:
    """Stores `records` in one transaction on `conn`; returns the records left out. A batch the database
    refuses for what a record holds (a value its types cannot take) would be refused at every retry, and
    whoever retries it would store nothing after it: so a refused batch is stored again one record at a
    time, and only the records refused alone are left out. Any other failure is raised, for a retry.
    `then(conn)` (a coroutine) runs in the batch's transaction, or after the last record stored alone."""
    try:
        async with conn.transaction():
            await store(conn, records, known_days)
            if then is not None:
                await then(conn)
        return []
    except Exception as error:  # noqa: BLE001 - refused for its content: find the records that are
        if not refused_for_content(error):
            raise
        known_days.clear()
        log.info("activity: a batch of %d was refused (%s: %s); storing one at a time", len(records),
                 type(error).__name__, error)  # fmt: skip
    refused = []
    for record in records:
        try:
            async with conn.transaction():
                await store(conn, [record], known_days)
        except Exception as error:  # noqa: BLE001 - this record cannot be stored as it is
            if not refused_for_content(error):
                raise
            known_days.clear()
            log.error(
                "activity: record %s left out, storage refused it: %s: %s", record.id, type(error).__name__, error
            )
            refused.append(record)
    if then is not None:
        async with conn.transaction():
            await then(conn)
    return refused


_TEXT_FIELDS = tuple(
    name
    for name, kind in zip(ActivityRecord.__struct_fields__, msgspec.structs.fields(ActivityRecord), strict=True)
    if kind.type in (str, str | None)
)
# The record's fields that are also columns in an index. PostgreSQL refuses an index entry past about 2.7 kB,
# and a request may name anything in its path (`/workspaces/<2,000 characters>`, answered 401 or 404): kept
# whole, such a field would fail its batch.
_INDEXED_FIELDS = ("id", "org_id", "workspace_id", "app_id", "user_id", "action", "resource_type", "resource_id",
                   "augmentation_id")  # fmt: skip
MAX_INDEXED_LENGTH = 200


def storable(record: ActivityRecord) -> ActivityRecord:
    """The record as PostgreSQL can store it: any NUL in its text fields replaced by U+FFFD, and the fields that
    are index columns cut to MAX_INDEXED_LENGTH characters. A record describes what was asked, and a request may
    carry a NUL in its path (`/workspaces/a%00b`, answered 422) or a long made-up id; stored as it came, one such
    record would fail its whole batch, and no activity would be stored after it. A deploy or undeploy from an
    older process is stored with its verb of the six."""
    changes = {}
    if record.action in LEGACY_ACTIONS:
        changes["action"] = LEGACY_ACTIONS[record.action]
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if value and "\x00" in value:
            changes[name] = value = value.replace("\x00", "\ufffd")
        if value and name in _INDEXED_FIELDS and len(value) > MAX_INDEXED_LENGTH:
            changes[name] = value[:MAX_INDEXED_LENGTH]
    return msgspec.structs.replace(record, **changes) if changes else record


def _row(r: ActivityRecord) -> tuple:
    return (
        r.id,
        r.org_id,
        r.timestamp,
        r.workspace_id,
        r.app_id,
        r.user_id,
        r.action,
        r.resource_type,
        r.resource_id,
        r.augmentation_id,
        r.success,
        r.duration_ms,
        encode(r),
    )


def _scopes(record: ActivityRecord) -> list[tuple[str, str]]:
    scopes = [("org", record.org_id)]
    if record.workspace_id:
        scopes.append(("workspace", record.workspace_id))
    if record.user_id:
        scopes.append(("user", record.user_id))
    if record.resource_type == "endpoint" and record.resource_id:
        scopes.append(("endpoint", record.resource_id))
    return scopes


def _rollups(records: list[ActivityRecord]) -> dict[tuple, list]:
    totals: dict[tuple, list] = {}
    for r in records:
        hour = r.timestamp.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        for scope, scope_id in _scopes(r):
            key = (r.org_id, scope, scope_id, hour, r.action, r.resource_type or "")
            row = totals.setdefault(key, [0, 0, 0.0, 0])
            row[0] += 1
            row[1] += r.success
            row[2] += r.duration_ms
            row[3] += r.tokens
    return totals


async def drop_expired(conn: psycopg.AsyncConnection, retention_days: int, today: date) -> list[str]:
    """Drops whole day partitions older than the retention; returns their names."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'activity'"
    )
    cutoff = f"activity_{today - timedelta(days=retention_days):%Y%m%d}"
    dropped = [name for (name,) in await cursor.fetchall() if name < cutoff]
    for name in dropped:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
    return dropped
