"""Environment and deployment use cases."""

from __future__ import annotations

import msgspec

from commands.catalog import require_item, require_workspace
from commands.unit_of_work import CommandRunner, Context, Outcome, UnitOfWork, new_id
from domain.catalog import CATALOG
from domain.environment import (
    ENVIRONMENT,
    CreateEnvironment,
    DeleteEnvironment,
    DeployRelease,
    Environment,
    Environments,
    UndeployApp,
    UpdateEnvironment,
    environments_stream,
)
from domain.errors import FieldError, NotFound, ValidationFailed


def _environments(uow: UnitOfWork, workspace_id: str, environment_id: str) -> Environments:
    require_workspace(uow, workspace_id)
    environments = uow.load(ENVIRONMENT, environments_stream(workspace_id))
    if environments is None:
        raise NotFound("environment", environment_id)
    environments.get(environment_id)  # 404 when deleted or unknown
    return environments


def create_environment(commands: CommandRunner, ctx: Context, workspace_id: str, **fields) -> Outcome:
    environment_id = new_id("env")

    def use_case(uow: UnitOfWork) -> Environment:
        require_workspace(uow, workspace_id)
        command = CreateEnvironment(workspace_id=workspace_id, environment_id=environment_id, **fields)
        return uow.decide(ENVIRONMENT, environments_stream(workspace_id), command).environments[environment_id]

    return Outcome(*commands.run(ctx, use_case))


def update_environment(
    commands: CommandRunner, ctx: Context, workspace_id: str, environment_id: str, **changes
) -> Outcome:
    def use_case(uow: UnitOfWork) -> Environment:
        _environments(uow, workspace_id, environment_id)
        command = UpdateEnvironment(environment_id=environment_id, **changes)
        return uow.decide(ENVIRONMENT, environments_stream(workspace_id), command).environments[environment_id]

    return Outcome(*commands.run(ctx, use_case))


def delete_environment(commands: CommandRunner, ctx: Context, workspace_id: str, environment_id: str) -> Outcome:
    def use_case(uow: UnitOfWork) -> None:
        _environments(uow, workspace_id, environment_id)
        uow.decide(ENVIRONMENT, environments_stream(workspace_id), DeleteEnvironment(environment_id))

    return Outcome(*commands.run(ctx, use_case))


class Deployment(msgspec.Struct, frozen=True):
    deployment_id: str
    environment_id: str
    app_id: str
    release_id: str | None


def deploy_release(
    commands: CommandRunner, ctx: Context, workspace_id: str, environment_id: str, app_id: str, release_id: str
) -> Outcome:
    deployment_id = new_id("dep")

    def use_case(uow: UnitOfWork) -> Deployment:
        environment = _environments(uow, workspace_id, environment_id).get(environment_id)
        require_item(uow, "apps", app_id, workspace_id)
        release = require_item(uow, "releases", release_id, workspace_id)
        if release.fields["app_id"] != app_id:
            raise ValidationFailed(
                [
                    FieldError(
                        ("release_id",),
                        f"Release {release_id} belongs to app {release.fields['app_id']}, not {app_id}",
                        "value_error",
                        release_id,
                    )
                ]
            )
        active_id = environment.active_deployments.get(app_id)
        active = uow.load(CATALOG, active_id) if active_id else None
        older = active is not None and (release.created_at, release.item_id) < (active.created_at, active.item_id)
        uow.decide(
            ENVIRONMENT,
            environments_stream(workspace_id),
            DeployRelease(
                environment_id=environment_id,
                deployment_id=deployment_id,
                app_id=app_id,
                release_id=release_id,
                older_than_active=older,
            ),
        )
        return Deployment(deployment_id, environment_id, app_id, release_id)

    return Outcome(*commands.run(ctx, use_case))


def undeploy_app(commands: CommandRunner, ctx: Context, workspace_id: str, environment_id: str, app_id: str) -> Outcome:
    deployment_id = new_id("dep")

    def use_case(uow: UnitOfWork) -> Deployment:
        _environments(uow, workspace_id, environment_id)
        uow.decide(
            ENVIRONMENT,
            environments_stream(workspace_id),
            UndeployApp(environment_id=environment_id, deployment_id=deployment_id, app_id=app_id),
        )
        return Deployment(deployment_id, environment_id, app_id, None)

    return Outcome(*commands.run(ctx, use_case))
