"""Environments and their deployments on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.common import RequestBody


class EnvironmentCreate(RequestBody):
    name: str
    slug: str | None = None
    description: str | None = None
    is_default: bool | None = None


class EnvironmentUpdate(RequestBody):
    name: str | UnsetType = UNSET
    slug: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    is_default: bool | UnsetType = UNSET


class EnvironmentView(msgspec.Struct):
    environment_id: str
    workspace_id: str
    org_id: str
    name: str
    slug: str
    description: str | None
    is_default: bool
    active_deployments: Annotated[dict[str, str], msgspec.Meta(description="App id -> active release id")]
    status: Literal["active"]
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, org_id: str, workspace_id: str, e) -> EnvironmentView:
        return cls(
            environment_id=e.environment_id,
            workspace_id=workspace_id,
            org_id=org_id,
            name=e.name,
            slug=e.slug,
            description=e.description,
            is_default=e.is_default,
            active_deployments=e.active_deployments,
            status="active",
            created_by=e.created_by,
            created_at=e.created_at,
            updated_at=e.updated_at,
        )


class EnvironmentAnswer(msgspec.Struct):
    message: str
    environment: EnvironmentView


class EnvironmentList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    environments: list[EnvironmentView]


class DeployRequest(RequestBody):
    app_id: str
    release_id: str


class Deployed(msgspec.Struct):
    message: str
    deployment_id: str
    environment_id: str
    app_id: str
    release_id: str


class Undeployed(msgspec.Struct):
    message: str
    deployment_id: str


class Deployment(msgspec.Struct):
    deployment_id: str
    environment_id: str
    app_id: str
    release_id: str | None
    previous_release_id: str | None
    action: Literal["deploy", "rollback", "undeploy"]
    deployed_by: str
    deployed_at: datetime


class DeploymentList(msgspec.Struct):
    deployments: list[Deployment]
    total: int
