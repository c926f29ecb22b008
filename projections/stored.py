"""What the event store holds, for a read its view cannot answer yet.

The views lag the store by the time the pipeline takes, so a GET by id of something a command has just
created reads that resource's stream from the store, on the caller's async connection, folded by the
process's codec; the token checks confirm what they cached against the store's stream versions the same way.
"""

from __future__ import annotations

from typing import Any

import psycopg

from domain.action import ACTION, ActionState
from domain.catalog import CATALOG, CatalogItem
from domain.environment import ENVIRONMENT, Environment, environments_stream
from domain.events import AggregateType, valid_id
from domain.run import RUN, RunState
from eventstore import postgres
from eventstore.codec import Codec


async def stored(conn: psycopg.AsyncConnection, codec: Codec, kind: AggregateType, stream_id: str, org_id: str) -> Any:
    """The live state of a stream of this org (None when absent, another org's or deleted)."""
    if not valid_id(stream_id):  # no such stream can exist: do not ask the database
        return None
    state, _ = codec.fold(kind, await postgres.read_stream(conn, stream_id))
    if state is None or state.org_id != org_id or getattr(state, "deleted", False):
        return None
    return state


async def stored_action(
    conn: psycopg.AsyncConnection, codec: Codec, org_id: str, workspace_id: str, app_id: str, action_id: str
) -> ActionState | None:
    action = await stored(conn, codec, ACTION, action_id, org_id)
    return action if action is not None and (action.workspace_id, action.app_id) == (workspace_id, app_id) else None


async def stored_run(
    conn: psycopg.AsyncConnection, codec: Codec, org_id: str, action_id: str, run_id: str
) -> RunState | None:
    run = await stored(conn, codec, RUN, run_id, org_id)
    return run if run is not None and run.action_id == action_id else None


async def stored_item(
    conn: psycopg.AsyncConnection, codec: Codec, org_id: str, workspace_id: str, kind: str, item_id: str
) -> CatalogItem | None:
    """What `commands.catalog.require_item` finds."""
    item = await stored(conn, codec, CATALOG, item_id, org_id)
    return item if item is not None and item.kind == kind and item.workspace_id == workspace_id else None


async def stored_environment(
    conn: psycopg.AsyncConnection, codec: Codec, org_id: str, workspace_id: str, environment_id: str
) -> Environment | None:
    environments = await stored(conn, codec, ENVIRONMENT, environments_stream(workspace_id), org_id)
    environment = environments.environments.get(environment_id) if environments is not None else None
    return None if environment is None or environment.deleted else environment


async def stream_versions(conn: psycopg.AsyncConnection, stream_ids: list[str]) -> dict[str, int]:
    """The version of each of these streams that has events: what a cache of states read from the store
    (`commands.tokens.TokenVerifier`) checks to know which are still current."""
    return await postgres.stream_versions(conn, stream_ids)
