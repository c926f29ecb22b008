"""A batch's rows written with one COPY and one statement.

Passing many rows as parameters (executemany, or arrays for unnest) costs Python CPU for every value;
a binary COPY is encoded in C, for a fraction of that
(BENCHMARKS.md, "Appendix: why the code is the way it is"). So a view copies a batch's rows into a staging
table and merges them with one statement that reads them as `moved`.

The staging table is temporary, made by the session when it first needs it, and emptied at every
commit, so nothing in it outlives the writing transaction and it never grows: an ordinary table
emptied by DELETE would keep its dead rows until a vacuum, and every batch would scan them all.

A few rows skip the staging table: they go as array parameters of the statement itself, one round trip
instead of three (make the table, copy, merge). Under load the projector's batches are small and its
round trips wait for a busy CPU, so round trips, not encoding, are what a small batch costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.pq import TransactionStatus

from domain.events import Recorded

SMALL_BATCH = 64  # rows up to which a merge sends arrays instead of copying


class Staging:
    def __init__(self, name: str, columns: dict[str, str]) -> None:
        self.name = f"stage_{name}"
        self.columns = columns  # name -> PostgreSQL type, in the order of the rows' values
        self._names = ", ".join(columns)
        definitions = ", ".join(f"{column} {type_}" for column, type_ in columns.items())
        self._create = f"CREATE TEMP TABLE IF NOT EXISTS {self.name} ({definitions}) ON COMMIT DELETE ROWS"
        # Deleting while reading empties the table for a second merge in the same transaction.
        self._moved = f"WITH moved AS (DELETE FROM {self.name} RETURNING {self._names}) "
        arrays = ", ".join(f"%s::{type_}[]" for type_ in columns.values())
        self._unnested = f"WITH moved AS (SELECT * FROM unnest({arrays}) AS moved({self._names})) "

    async def merge(self, conn: psycopg.AsyncConnection, rows: Sequence[tuple], statement: str) -> list[tuple]:
        """Runs `statement` with `moved` (the rows: copied into the staging table, or a few sent as arrays) in
        scope and `{columns}` standing for their column names; returns what it returns. Each column's values
        must be of one Python type, as the arrays require. A statement starting with a comma continues the WITH
        clause that defines `moved`."""
        if not rows:
            return []
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            raise RuntimeError("a merge runs inside the caller's transaction: a commit empties the staging table")
        async with conn.cursor() as cur:
            if len(rows) <= SMALL_BATCH:
                # `%` is literal in the caller's statement, which takes no parameters of its own.
                merge = self._unnested + statement.format(columns=self._names).replace("%", "%%")
                await cur.execute(merge, [list(column) for column in zip(*rows, strict=True)])
                return await cur.fetchall() if cur.description else []
            await cur.execute(self._create)
            async with cur.copy(f"COPY {self.name} ({self._names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(self.columns.values()))
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(self._moved + statement.format(columns=self._names))
            return await cur.fetchall() if cur.description else []


async def rows_for(conn: psycopg.AsyncConnection, query: str, ids: list[str]) -> list[tuple]:
    """The rows `query` finds for these ids (its one parameter), without a round trip when there are none: a
    batch's streams are mostly new ones, with no row yet (see `earlier_streams`)."""
    if not ids:
        return []
    cursor = await conn.execute(query, (ids,))
    return await cursor.fetchall()


def earlier_streams(events: list[Recorded]) -> list[str]:
    """The batch's streams that may already have a row: not those whose first event (version 1) is in it, which
    a view could only have seen if it had applied this batch already. Most of a batch's streams are new ones
    (runs above all), so this spares most of the lookups."""
    new = {r.stream_id for r in events if r.version == 1}
    return list({r.stream_id for r in events} - new)
