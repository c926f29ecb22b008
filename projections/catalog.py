"""The catalog listing: one row per item, its state evolved by the domain's own `evolve`."""

from __future__ import annotations

import msgspec
import psycopg

from domain.catalog import CATALOG, CatalogItem
from domain.events import Recorded
from projections.batches import Staging, earlier_streams, rows_for
from projections.pagination import counted_page

NAME = "catalog"


_ITEMS = Staging(
    "rm_catalog",
    {
        "item_id": "text",
        "org_id": "text",
        "workspace_id": "text",
        "kind": "text",
        "seq": "int8",
        "deleted": "bool",
        "state": "bytea",
    },
)
_decoder = msgspec.json.Decoder(CatalogItem)
_encoder = msgspec.json.Encoder()


class CatalogListing:
    name = NAME

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        events = [r for r in batch if r.aggregate == "catalog"]
        if not events:
            return
        found = await rows_for(
            conn, "SELECT item_id, seq, state FROM rm_catalog WHERE item_id = ANY(%s)", earlier_streams(events)
        )
        rows = {item_id: (seq, _decoder.decode(state)) for item_id, seq, state in found}
        for record in events:
            seq, state = rows.get(record.stream_id, (record.position, None))
            rows[record.stream_id] = (seq, CATALOG.evolve(state, record.event, record.meta))
        await _ITEMS.merge(
            conn,
            [
                (item_id, s.org_id, s.workspace_id, s.kind, seq, s.deleted, _encoder.encode(s))
                for item_id, (seq, s) in rows.items()
            ],
            "INSERT INTO rm_catalog ({columns}) SELECT {columns} FROM moved "
            "ON CONFLICT (item_id) DO UPDATE SET deleted = EXCLUDED.deleted, state = EXCLUDED.state",
        )


async def get_item(
    conn: psycopg.AsyncConnection, org_id: str, workspace_id: str, kind: str, item_id: str
) -> CatalogItem | None:
    row = await (
        await conn.execute(
            "SELECT state FROM rm_catalog WHERE item_id = %s AND org_id = %s AND workspace_id = %s AND kind = %s "
            "AND NOT deleted",
            (item_id, org_id, workspace_id, kind),
        )
    ).fetchone()
    return _decoder.decode(row[0]) if row else None


async def list_items(
    conn: psycopg.AsyncConnection, org_id: str, workspace_id: str, kind: str, after: int | None, limit: int
) -> tuple[int, list[tuple[int, CatalogItem]]]:
    where = "org_id = %s AND workspace_id = %s AND kind = %s AND NOT deleted"
    total, rows = await counted_page(
        conn,
        f"SELECT count(*) FROM rm_catalog WHERE {where}",
        (org_id, workspace_id, kind),
        f"SELECT seq, state FROM rm_catalog WHERE {where} AND seq > %s ORDER BY seq LIMIT %s",
        (org_id, workspace_id, kind, after or 0, limit + 1),
    )
    return total, [(seq, _decoder.decode(state)) for seq, state in rows]
