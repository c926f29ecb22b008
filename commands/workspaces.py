"""Workspace use cases."""

from __future__ import annotations

from commands.unit_of_work import CommandRunner, Context, Outcome, new_id
from domain.workspace import WORKSPACE, CreateWorkspace, DeleteWorkspace, UpdateWorkspace


def create_workspace(commands: CommandRunner, ctx: Context, **fields) -> Outcome:
    workspace_id = new_id("ws")
    command = CreateWorkspace(
        workspace_id=workspace_id, org_id=ctx.org_id, owner_id=ctx.actor.user_id or ctx.actor.principal_id, **fields
    )
    return commands.create(WORKSPACE, workspace_id, command, ctx)


def update_workspace(commands: CommandRunner, ctx: Context, workspace_id: str, update: UpdateWorkspace) -> Outcome:
    return commands.execute(WORKSPACE, workspace_id, update, ctx)


def delete_workspace(commands: CommandRunner, ctx: Context, workspace_id: str) -> Outcome:
    return commands.execute(WORKSPACE, workspace_id, DeleteWorkspace(), ctx)
