"""Where each consumer of the log stands, kept in PostgreSQL next to the read models (their tables: migrations/0003)."""

from __future__ import annotations

from psycopg import AsyncConnection

RELAY = "relay"


async def store_id(conn: AsyncConnection) -> str:
    row = await (await conn.execute("SELECT value FROM mm_settings WHERE key = 'store_id'")).fetchone()
    assert row is not None, "run `mechamental migrate` first"
    return row[0]


async def lock_position(conn: AsyncConnection, name: str) -> int:
    """Reads a consumer's position inside the caller's transaction, holding it until commit."""
    return (await lock_positions(conn, [name]))[name]


async def lock_positions(conn: AsyncConnection, names: list[str], *, wait_for_disk: bool = True) -> dict[str, int]:
    """`lock_position` for several consumers, locking in name order (so two lockers of overlapping sets do not
    deadlock once the rows exist): one round trip then. `wait_for_disk=False` also makes the transaction's
    commit asynchronous (`synchronous_commit` off, for this transaction only), in the same round trip."""
    names = sorted(names)
    query = (
        "SELECT name, position"
        + ("" if wait_for_disk else ", set_config('synchronous_commit', 'off', true)")
        + " FROM mm_positions WHERE name = ANY(%s) ORDER BY name FOR UPDATE"
    )
    found = {row[0]: row[1] for row in await (await conn.execute(query, (names,))).fetchall()}
    if len(found) < len(names):  # a consumer's first batch
        await conn.execute(
            "INSERT INTO mm_positions (name) SELECT unnest(%s::text[]) ORDER BY 1 ON CONFLICT (name) DO NOTHING",
            (names,),
        )
        found = {row[0]: row[1] for row in await (await conn.execute(query, (names,))).fetchall()}
    return found


async def save_positions(conn: AsyncConnection, moved: dict[str, int]) -> None:
    if moved:
        await conn.execute(
            "UPDATE mm_positions p SET position = m.position, updated_at = now() "
            "FROM unnest(%s::text[], %s::bigint[]) AS m(name, position) WHERE p.name = m.name",
            (list(moved), list(moved.values())),
        )


async def save_position(conn: AsyncConnection, name: str, position: int) -> None:
    await conn.execute("UPDATE mm_positions SET position = %s, updated_at = now() WHERE name = %s", (position, name))


async def read_positions(conn: AsyncConnection, names: list[str]) -> dict[str, int]:
    cursor = await conn.execute("SELECT name, position FROM mm_positions WHERE name = ANY(%s)", (names,))
    found = {name: position for name, position in await cursor.fetchall()}
    return {name: found.get(name, 0) for name in names}


async def head(conn: AsyncConnection) -> int:
    """The position of the newest event in the log."""
    row = await (await conn.execute("SELECT coalesce(max(position), 0) FROM mm_event_index")).fetchone()
    return row[0]


async def status(conn: AsyncConnection, names: list[str]) -> list[tuple[str, int, int, int, float]]:
    """(name, position, head, lag in events, lag in seconds) of each consumer of the log."""
    head_position = await head(conn)
    found = await read_positions(conn, names)
    rows = []
    for name in names:
        position = found[name]
        lag_events, lag_seconds = 0, 0.0
        if position < head_position:
            count, oldest = await (
                await conn.execute(
                    "SELECT count(*), extract(epoch FROM now() - min(occurred_at)) FROM mm_event_index "
                    "WHERE position > %s",
                    (position,),
                )
            ).fetchone()
            lag_events, lag_seconds = count, float(oldest or 0.0)
        rows.append((name, position, head_position, lag_events, round(lag_seconds, 3)))
    return rows
