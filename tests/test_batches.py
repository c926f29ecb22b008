"""A batch's rows merged through the staging table (COPY) and as array parameters (a few rows) must give the
same table, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import psycopg

from projections import batches
from projections.batches import Staging

COLUMNS = {
    "id": "text",
    "n": "int8",
    "big": "numeric",
    "blob": "bytea",
    "at": "timestamptz",
    "flag": "bool",
    "ms": "float8",
}
ROWS = [
    ("a", 1, 2**70, b"\x00\xff", datetime(2030, 1, 1, tzinfo=UTC), True, 1.5),
    ("100% {literal} %s", None, None, None, None, None, None),
    ("c", -(2**63), 0, b"", datetime(1999, 12, 31, 23, 59, tzinfo=UTC), False, float("inf")),
]


def merged(settings, small_batch: int) -> list[tuple]:
    table = "merge_" + secrets.token_hex(4)
    staging = Staging(table, COLUMNS)

    async def scenario() -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            columns = ", ".join(f"{name} {type_}" for name, type_ in COLUMNS.items())
            await conn.execute(f"CREATE TABLE {table} ({columns})")
            try:
                async with conn.transaction():
                    returned = await staging.merge(
                        conn, ROWS, f"INSERT INTO {table} ({{columns}}) SELECT {{columns}} FROM moved RETURNING id"
                    )
                assert sorted(returned) == sorted((row[0],) for row in ROWS)
                cursor = await conn.execute(f"SELECT * FROM {table} ORDER BY id")
                return await cursor.fetchall()
            finally:
                await conn.execute(f"DROP TABLE {table}")

    saved = batches.SMALL_BATCH
    batches.SMALL_BATCH = small_batch
    try:
        return asyncio.run(scenario())
    finally:
        batches.SMALL_BATCH = saved


def test_few_rows_as_arrays_merge_as_copied_rows_do(settings):
    copied = merged(settings, small_batch=0)
    assert merged(settings, small_batch=len(ROWS)) == copied
    assert [row[0] for row in copied] == sorted(row[0] for row in ROWS)
    assert dict((row[0], row[2]) for row in copied)["a"] == 2**70
