"""Environments and deployments: endpoints 16-23."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth import context_of
from api.common import Cursor, Limit, MinPosition, PathId, Views, command_answer
from api.schemas.common import MessageBody
from api.schemas.environments import (
    Deployed,
    Deployment,
    DeploymentList,
    DeployRequest,
    EnvironmentAnswer,
    EnvironmentCreate,
    EnvironmentList,
    EnvironmentUpdate,
    EnvironmentView,
    Undeployed,
)
from commands import environments as use_cases
from commands.unit_of_work import CommandRunner
from domain.environment import Environment
from domain.errors import NotFound
from projections import environments as listing
from projections import workspaces
from projections.pagination import Page, decode_cursor
from projections.stored import stored_environment

VIEWS = [listing.NAME, workspaces.NAME]


def _fields(data: msgspec.Struct) -> dict:
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}


async def _environment(views: Views, conn, org_id: str, workspace_id: str, environment_id: str) -> Environment:
    """The view's environment, else the event store's: one just created may not have reached the view yet."""
    environment = await listing.get_environment(conn, org_id, workspace_id, environment_id)
    if environment is None:
        environment = await stored_environment(conn, views.codec, org_id, workspace_id, environment_id)
    if environment is None:
        raise NotFound("environment", environment_id)
    return environment


class EnvironmentController(Controller):
    path = "/v1/orgs/{org_id:str}/workspaces/{workspace_id:str}/environments"
    tags = ["Environments"]

    @get("/", opt={"permission": "environment:read"}, summary="List Environments")
    async def list_environments(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> EnvironmentList:
        after = decode_cursor(cursor)
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            await views.require_workspace(conn, org_id, workspace_id, min_position)
            total, rows = await listing.list_environments(conn, org_id, workspace_id, after, limit)
        page = Page(rows, limit, key_of=lambda row: row[0])
        return EnvironmentList(
            total=total,
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            environments=[EnvironmentView.of(org_id, workspace_id, e) for _, e in page.items],
        )

    @post(
        "/",
        opt={"permission": "environment:create"},
        summary="Create Environment",
        status_code=201,
        sync_to_thread=True,
    )
    def create_environment(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        data: JSONBody[EnvironmentCreate],
    ) -> Response[EnvironmentAnswer]:
        outcome = use_cases.create_environment(
            commands, context_of(request), workspace_id, **msgspec.structs.asdict(data)
        )
        view = EnvironmentView.of(org_id, workspace_id, outcome.state)
        return command_answer(EnvironmentAnswer("Environment created successfully", view), outcome, 201)

    @get("/{environment_id:str}", opt={"permission": "environment:read"}, summary="Get Environment")
    async def get_environment(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        environment_id: PathId,
        min_position: MinPosition = None,
    ) -> EnvironmentView:
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            await views.require_workspace(conn, org_id, workspace_id, min_position)
            environment = await _environment(views, conn, org_id, workspace_id, environment_id)
        return EnvironmentView.of(org_id, workspace_id, environment)

    @put(
        "/{environment_id:str}",
        opt={"permission": "environment:update"},
        summary="Update Environment",
        sync_to_thread=True,
    )
    def update_environment(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        environment_id: PathId,
        data: JSONBody[EnvironmentUpdate],
    ) -> Response[EnvironmentAnswer]:
        outcome = use_cases.update_environment(
            commands, context_of(request), workspace_id, environment_id, **_fields(data)
        )
        view = EnvironmentView.of(org_id, workspace_id, outcome.state)
        return command_answer(EnvironmentAnswer("Environment updated successfully", view), outcome)

    @delete(
        "/{environment_id:str}",
        opt={"permission": "environment:delete"},
        summary="Delete Environment",
        status_code=200,
        sync_to_thread=True,
    )
    def delete_environment(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        environment_id: PathId,
    ) -> Response[MessageBody]:
        outcome = use_cases.delete_environment(commands, context_of(request), workspace_id, environment_id)
        return command_answer(MessageBody("Environment deleted successfully"), outcome)

    @post(
        "/{environment_id:str}/deploy",
        opt={"permission": "deployment:create"},
        summary="Deploy Release",
        status_code=200,
        sync_to_thread=True,
    )
    def deploy(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        environment_id: PathId,
        data: JSONBody[DeployRequest],
    ) -> Response[Deployed]:
        outcome = use_cases.deploy_release(
            commands,
            context_of(request),
            workspace_id,
            environment_id,
            data.app_id,
            data.release_id,
        )
        d = outcome.state
        return command_answer(
            Deployed("Release deployed successfully", d.deployment_id, d.environment_id, d.app_id, d.release_id),
            outcome,
        )

    @delete(
        "/{environment_id:str}/deploy/{app_id:str}",
        opt={"permission": "deployment:delete"},
        summary="Undeploy App",
        status_code=200,
        sync_to_thread=True,
    )
    def undeploy(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        environment_id: PathId,
        app_id: PathId,
    ) -> Response[Undeployed]:
        outcome = use_cases.undeploy_app(commands, context_of(request), workspace_id, environment_id, app_id)
        return command_answer(Undeployed("App undeployed from environment", outcome.state.deployment_id), outcome)

    @get("/{environment_id:str}/deployments", opt={"permission": "deployment:read"}, summary="List Deployments")
    async def list_deployments(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        environment_id: PathId,
        limit: Limit = 50,
        min_position: MinPosition = None,
    ) -> DeploymentList:
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            await views.require_workspace(conn, org_id, workspace_id, min_position)
            await _environment(views, conn, org_id, workspace_id, environment_id)
            total, rows = await listing.list_deployments(conn, org_id, environment_id, limit)
        return DeploymentList(
            deployments=[msgspec.convert(r, Deployment, from_attributes=True) for r in rows], total=total
        )
