"""The workspace listing: one row per workspace, its state evolved by the domain's own `evolve`."""

from __future__ import annotations

import msgspec
import psycopg

from domain.events import Recorded
from domain.workspace import WORKSPACE, WorkspaceState
from projections.batches import Staging, earlier_streams, rows_for
from projections.pagination import counted_page

NAME = "workspaces"


_WORKSPACES = Staging(
    "rm_workspaces", {"workspace_id": "text", "org_id": "text", "seq": "int8", "deleted": "bool", "state": "bytea"}
)
_decoder = msgspec.json.Decoder(WorkspaceState)
_encoder = msgspec.json.Encoder()


class WorkspaceListing:
    name = NAME

    def cached_keys(self, batch: list[Recorded]) -> set[str]:
        """API processes cache workspaces by id (`api.cache`). A creation needs no announcement: a cache keeps
        only rows it read, so none holds a workspace before its creation commits; and a batch with nothing to
        announce sends no NOTIFY, whose commit PostgreSQL serialises with every other notifying commit (the
        event store's appends among them)."""
        return {r.stream_id for r in batch if r.aggregate == "workspace" and r.version > 1}

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        events = [r for r in batch if r.aggregate == "workspace"]
        if not events:
            return
        found = await rows_for(
            conn,
            "SELECT workspace_id, seq, state FROM rm_workspaces WHERE workspace_id = ANY(%s)",
            earlier_streams(events),
        )
        rows = {wid: (seq, _decoder.decode(state)) for wid, seq, state in found}
        for record in events:
            seq, state = rows.get(record.stream_id, (record.position, None))
            rows[record.stream_id] = (seq, WORKSPACE.evolve(state, record.event, record.meta))
        changed = [
            (wid, state.org_id, seq, state.deleted, _encoder.encode(state)) for wid, (seq, state) in rows.items()
        ]
        await _WORKSPACES.merge(
            conn,
            changed,
            "INSERT INTO rm_workspaces ({columns}) SELECT {columns} FROM moved "
            "ON CONFLICT (workspace_id) DO UPDATE SET deleted = EXCLUDED.deleted, state = EXCLUDED.state",
        )


async def get_workspace(conn: psycopg.AsyncConnection, org_id: str, workspace_id: str) -> WorkspaceState | None:
    row = await (
        await conn.execute(
            "SELECT state FROM rm_workspaces WHERE workspace_id = %s AND org_id = %s AND NOT deleted",
            (workspace_id, org_id),
        )
    ).fetchone()
    return _decoder.decode(row[0]) if row else None


async def list_workspaces(
    conn: psycopg.AsyncConnection, org_id: str, after: int | None, limit: int
) -> tuple[int, list[tuple[int, WorkspaceState]]]:
    """The org's total and one page of (key, workspace) in creation order, after the cursor's key."""
    total, rows = await counted_page(
        conn,
        "SELECT count(*) FROM rm_workspaces WHERE org_id = %s AND NOT deleted",
        (org_id,),
        "SELECT seq, state FROM rm_workspaces WHERE org_id = %s AND NOT deleted AND seq > %s ORDER BY seq LIMIT %s",
        (org_id, after or 0, limit + 1),
    )
    return total, [(seq, _decoder.decode(state)) for seq, state in rows]
