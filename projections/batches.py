"""A batch's rows written with one COPY and one statement.

Passing many rows as parameters (executemany, or arrays for unnest) costs Python CPU for every value;
a binary COPY is encoded in C, in about a tenth of that. So a view copies a batch's rows into a
staging table and merges them with one statement that reads them as `moved`, deleting them on the
way. The rows live only inside the writing transaction, so the table is empty for everyone else
and writers never see each other's rows. It is part of the view's DDL (unlogged: nothing in it
outlives a transaction), so a rebuild's schema has its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg


class Staging:
    def __init__(self, name: str, columns: dict[str, str]) -> None:
        self.name = f"stage_{name}"
        self.columns = columns  # name -> PostgreSQL type, in the order of the rows' values
        self._names = ", ".join(columns)
        # Not `CREATE TABLE`: that names the view's own tables, which a rebuild swaps in (see tables_of).
        definitions = ", ".join(f"{column} {type_}" for column, type_ in columns.items())
        self.ddl = f"CREATE UNLOGGED TABLE IF NOT EXISTS {self.name} ({definitions});\n"

    async def merge(self, conn: psycopg.AsyncConnection, rows: Sequence[tuple], statement: str) -> list[tuple]:
        """Copies `rows` in, then runs `statement` with `moved` (the rows) in scope and `{columns}` standing for
        their column names; returns what it returns. Inside the caller's transaction."""
        if not rows:
            return []
        async with conn.cursor() as cur:
            async with cur.copy(f"COPY {self.name} ({self._names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(self.columns.values()))
                for row in rows:
                    await copy.write_row(row)
            moved = f"WITH moved AS (DELETE FROM {self.name} RETURNING {self._names}) "
            await cur.execute(moved + statement.format(columns=self._names))
            return await cur.fetchall() if cur.description else []
