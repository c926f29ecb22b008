"""Where each consumer of the log stands, kept in PostgreSQL next to the read models."""

from __future__ import annotations

import secrets

from psycopg import AsyncConnection

DDL = """
CREATE TABLE IF NOT EXISTS mm_settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS mm_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""

RELAY = "relay"


async def create_tables(conn: AsyncConnection) -> None:
    await conn.execute(DDL)
    # Message ids are `<store id>:<position>`, so JetStream's de-duplication never confuses two stores.
    await conn.execute(
        "INSERT INTO mm_settings (key, value) VALUES ('store_id', %s) ON CONFLICT (key) DO NOTHING",
        (secrets.token_hex(6),),
    )


async def store_id(conn: AsyncConnection) -> str:
    row = await (await conn.execute("SELECT value FROM mm_settings WHERE key = 'store_id'")).fetchone()
    assert row is not None, "run `mechamental migrate` first"
    return row[0]


async def lock_position(conn: AsyncConnection, name: str) -> int:
    """Reads a consumer's position inside the caller's transaction, holding it until commit."""
    await conn.execute("INSERT INTO mm_positions (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
    row = await (await conn.execute("SELECT position FROM mm_positions WHERE name = %s FOR UPDATE", (name,))).fetchone()
    assert row is not None
    return row[0]


async def save_position(conn: AsyncConnection, name: str, position: int) -> None:
    await conn.execute("UPDATE mm_positions SET position = %s, updated_at = now() WHERE name = %s", (position, name))


async def read_positions(conn: AsyncConnection, names: list[str]) -> dict[str, int]:
    cursor = await conn.execute("SELECT name, position FROM mm_positions WHERE name = ANY(%s)", (names,))
    found = {name: position for name, position in await cursor.fetchall()}
    return {name: found.get(name, 0) for name in names}


async def try_leadership(conn: AsyncConnection, role: str) -> bool:
    """One active process per role: a session advisory lock, released when its connection ends."""
    row = await (await conn.execute("SELECT pg_try_advisory_lock(hashtext('mechamental.' || %s))", (role,))).fetchone()
    return bool(row and row[0])
