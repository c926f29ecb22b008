"""Environments and their deployment history.

The aggregate is a workspace's set of environments; the view keeps that set (to evolve it with the
domain's own `evolve`) and one row per environment and per deployment for the queries.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg

from domain.environment import (
    ENVIRONMENT,
    AppUndeployed,
    Environment,
    EnvironmentCreated,
    Environments,
    ReleaseDeployed,
)
from domain.events import Recorded
from projections.batches import Staging, earlier_streams, rows_for
from projections.pagination import counted_page

NAME = "environments"


_SETS = Staging("rm_environment_sets", {"stream_id": "text", "state": "bytea"})
_ENVIRONMENTS = Staging(
    "rm_environments",
    {
        "environment_id": "text",
        "org_id": "text",
        "workspace_id": "text",
        "seq": "int8",
        "deleted": "bool",
        "state": "bytea",
    },
)
_DEPLOYMENTS = Staging(
    "rm_deployments",
    {
        "deployment_id": "text",
        "org_id": "text",
        "environment_id": "text",
        "seq": "int8",
        "app_id": "text",
        "release_id": "text",
        "previous_release_id": "text",
        "action": "text",
        "deployed_by": "text",
        "deployed_at": "timestamptz",
    },
)
_set_decoder = msgspec.json.Decoder(Environments)
_decoder = msgspec.json.Decoder(Environment)
_encoder = msgspec.json.Encoder()


class Deployment(msgspec.Struct):
    deployment_id: str
    environment_id: str
    app_id: str
    release_id: str | None
    previous_release_id: str | None
    action: str
    deployed_by: str
    deployed_at: datetime


class EnvironmentListing:
    name = NAME

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        events = [r for r in batch if r.aggregate == "environment"]
        if not events:
            return
        found = await rows_for(
            conn, "SELECT stream_id, state FROM rm_environment_sets WHERE stream_id = ANY(%s)", earlier_streams(events)
        )
        sets = {stream_id: _set_decoder.decode(state) for stream_id, state in found}
        created_at: dict[str, int] = {}  # environment id -> position of its creation (its keyset order)
        deployments = []
        for record in events:
            sets[record.stream_id] = ENVIRONMENT.evolve(sets.get(record.stream_id), record.event, record.meta)
            event = record.event
            if isinstance(event, EnvironmentCreated):
                created_at[event.environment_id] = record.position
            if isinstance(event, (ReleaseDeployed, AppUndeployed)):
                deployments.append(
                    (
                        event.deployment_id,
                        record.meta.org_id,
                        event.environment_id,
                        record.position,
                        event.app_id,
                        event.release_id if isinstance(event, ReleaseDeployed) else None,
                        event.previous_release_id,
                        event.action if isinstance(event, ReleaseDeployed) else "undeploy",
                        record.meta.actor.user_id or record.meta.actor.principal_id,
                        record.meta.occurred_at,
                    )
                )
        await _SETS.merge(
            conn,
            [(stream_id, _encoder.encode(state)) for stream_id, state in sets.items()],
            "INSERT INTO rm_environment_sets ({columns}) SELECT {columns} FROM moved "
            "ON CONFLICT (stream_id) DO UPDATE SET state = EXCLUDED.state",
        )
        # Every environment of a touched workspace: a new default changes the old one too.
        await _ENVIRONMENTS.merge(
            conn,
            [
                (
                    e.environment_id,
                    s.org_id,
                    s.workspace_id,
                    created_at.get(e.environment_id, 0),
                    e.deleted,
                    _encoder.encode(e),
                )
                for s in sets.values()
                for e in s.environments.values()
            ],
            "INSERT INTO rm_environments ({columns}) SELECT {columns} FROM moved "
            "ON CONFLICT (environment_id) DO UPDATE SET deleted = EXCLUDED.deleted, state = EXCLUDED.state",
        )
        await _DEPLOYMENTS.merge(
            conn,
            deployments,
            "INSERT INTO rm_deployments ({columns}) SELECT {columns} FROM moved ON CONFLICT (deployment_id) DO NOTHING",
        )


async def get_environment(
    conn: psycopg.AsyncConnection, org_id: str, workspace_id: str, environment_id: str
) -> Environment | None:
    row = await (
        await conn.execute(
            "SELECT state FROM rm_environments WHERE environment_id = %s AND org_id = %s AND workspace_id = %s "
            "AND NOT deleted",
            (environment_id, org_id, workspace_id),
        )
    ).fetchone()
    return _decoder.decode(row[0]) if row else None


async def list_environments(
    conn: psycopg.AsyncConnection, org_id: str, workspace_id: str, after: int | None, limit: int
) -> tuple[int, list[tuple[int, Environment]]]:
    where = "org_id = %s AND workspace_id = %s AND NOT deleted"
    total, rows = await counted_page(
        conn,
        f"SELECT count(*) FROM rm_environments WHERE {where}",
        (org_id, workspace_id),
        f"SELECT seq, state FROM rm_environments WHERE {where} AND seq > %s ORDER BY seq LIMIT %s",
        (org_id, workspace_id, after or 0, limit + 1),
    )
    return total, [(seq, _decoder.decode(state)) for seq, state in rows]


async def list_deployments(
    conn: psycopg.AsyncConnection, org_id: str, environment_id: str, limit: int
) -> tuple[int, list[Deployment]]:
    total, rows = await counted_page(
        conn,
        "SELECT count(*) FROM rm_deployments WHERE org_id = %s AND environment_id = %s",
        (org_id, environment_id),
        "SELECT deployment_id, environment_id, app_id, release_id, previous_release_id, action, deployed_by, "
        "deployed_at FROM rm_deployments WHERE org_id = %s AND environment_id = %s ORDER BY seq DESC LIMIT %s",
        (org_id, environment_id, limit),
    )
    return total, [Deployment(*row) for row in rows]
