"""Workspace use cases."""

from __future__ import annotations

from commands.aggregates import Aggregates, Context, Outcome, new_id
from domain.workspace import WORKSPACE, CreateWorkspace, DeleteWorkspace, UpdateWorkspace


def create_workspace(aggregates: Aggregates, ctx: Context, **fields) -> Outcome:
    workspace_id = new_id("ws")
    command = CreateWorkspace(
        workspace_id=workspace_id, org_id=ctx.org_id, owner_id=ctx.actor.user_id or ctx.actor.principal_id, **fields
    )
    return aggregates.create(WORKSPACE, workspace_id, command, ctx)


def update_workspace(aggregates: Aggregates, ctx: Context, workspace_id: str, update: UpdateWorkspace) -> Outcome:
    return aggregates.execute(WORKSPACE, workspace_id, update, ctx)


def delete_workspace(aggregates: Aggregates, ctx: Context, workspace_id: str) -> Outcome:
    return aggregates.execute(WORKSPACE, workspace_id, DeleteWorkspace(), ctx)
