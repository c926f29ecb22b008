"""The token listing of each org. Secret hashes never reach this table."""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg

from domain.events import Recorded
from domain.token import TokenIssued, TokenRevoked
from projections.pagination import counted_page

NAME = "tokens"



class TokenRow(msgspec.Struct):
    token_id: str
    name: str
    role: str
    user_id: str | None
    principal_type: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class TokenListing:
    name = NAME

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        events = [r for r in batch if r.aggregate == "token"]
        if not events:
            return
        issued = [(r, r.event) for r in events if isinstance(r.event, TokenIssued)]
        revoked = [r for r in events if isinstance(r.event, TokenRevoked)]
        async with conn.cursor() as cur:  # a token is revoked only after it was issued: issues go first
            await cur.executemany(
                "INSERT INTO rm_tokens (token_id, org_id, seq, name, role, user_id, principal_type, "
                "created_at, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (token_id) DO NOTHING",
                [
                    (
                        e.token_id,
                        r.meta.org_id,
                        r.position,
                        e.name,
                        e.role,
                        e.user_id,
                        e.principal_type,
                        r.meta.occurred_at,
                        r.meta.actor.principal_id,
                    )
                    for r, e in issued
                ],
            )
            await cur.executemany(
                "UPDATE rm_tokens SET revoked_at = %s WHERE token_id = %s",
                [(r.meta.occurred_at, r.stream_id) for r in revoked],
            )


async def list_tokens(
    conn: psycopg.AsyncConnection, org_id: str, after: int | None, limit: int
) -> tuple[int, list[tuple[int, TokenRow]]]:
    total, rows = await counted_page(
        conn,
        "SELECT count(*) FROM rm_tokens WHERE org_id = %s",
        (org_id,),
        "SELECT seq, token_id, name, role, user_id, principal_type, created_at, created_by, revoked_at "
        "FROM rm_tokens WHERE org_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (org_id, after or 0, limit + 1),
    )
    return total, [(row[0], TokenRow(*row[1:])) for row in rows]
