"""Workspaces: endpoints 11-15."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api.auth import context_of
from api.common import Cursor, Limit, MinPosition, PathId, Views, command_answer
from api.schemas.common import MessageBody
from api.schemas.workspaces import Workspace, WorkspaceCreate, WorkspaceList, WorkspaceUpdate
from commands import workspaces as use_cases
from commands.unit_of_work import CommandRunner
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.workspace import UpdateWorkspace
from projections import workspaces as listing
from projections.pagination import Page, decode_cursor


class WorkspaceController(Controller):
    path = "/v1/orgs/{org_id:str}/workspaces"
    tags = ["Workspaces"]

    @get("/", opt={"permission": "workspace:read"}, summary="List Workspaces")
    async def list_workspaces(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        organization_id: Annotated[str | None, QueryParameter()] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> WorkspaceList:
        if organization_id is not None and organization_id != org_id:
            raise ValidationFailed(
                [
                    FieldError(
                        ("organization_id",),
                        "organization_id must equal the organization in the path",
                        "value_error",
                        organization_id,
                    )
                ],
                source="query",
            )
        after = decode_cursor(cursor)
        await views.wait_for([listing.NAME], min_position)
        async with views.connection() as conn:
            total, rows = await listing.list_workspaces(conn, org_id, after, limit)
        page = Page(rows, limit, key_of=lambda row: row[0])
        return WorkspaceList(
            total=total,
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            workspaces=[Workspace.of(state) for _, state in page.items],
        )

    @post("/", opt={"permission": "workspace:create"}, summary="Create Workspace", status_code=201, sync_to_thread=True)
    def create_workspace(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        data: JSONBody[WorkspaceCreate],
    ) -> Response[Workspace]:
        outcome = use_cases.create_workspace(commands, context_of(request), **msgspec.structs.asdict(data))
        return command_answer(Workspace.of(outcome.state), outcome, status_code=201)

    @get("/{workspace_id:str}", opt={"permission": "workspace:read"}, summary="Get Workspace")
    async def get_workspace(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> Workspace:
        await views.wait_for([listing.NAME], min_position)
        workspace = await views.find_workspace(org_id, workspace_id, min_position)
        if workspace is None:
            raise NotFound("workspace", workspace_id)
        return workspace

    @put("/{workspace_id:str}", opt={"permission": "workspace:update"}, summary="Update Workspace", sync_to_thread=True)
    def update_workspace(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        data: JSONBody[WorkspaceUpdate],
    ) -> Response[Workspace]:
        update = UpdateWorkspace(**msgspec.structs.asdict(data))
        outcome = use_cases.update_workspace(commands, context_of(request), workspace_id, update)
        return command_answer(Workspace.of(outcome.state), outcome)

    @delete(
        "/{workspace_id:str}",
        opt={"permission": "workspace:delete"},
        summary="Delete Workspace",
        status_code=200,
        sync_to_thread=True,
    )
    def delete_workspace(
        self, request: Request, commands: NamedDependency[CommandRunner], org_id: PathId, workspace_id: PathId
    ) -> Response[MessageBody]:
        outcome = use_cases.delete_workspace(commands, context_of(request), workspace_id)
        return command_answer(MessageBody(message="Workspace deleted successfully"), outcome)
