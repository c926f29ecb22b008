"""Wire types: request and response bodies, in the seeds' exact shapes. Never events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from domain.workspace import WorkspaceState


# Errors
class ErrorBody(msgspec.Struct):
    error: str
    message: str
    details: dict[str, Any]
    timestamp: str
    status_code: int


class ValidationErrorItem(msgspec.Struct):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] = {}


class ValidationErrorBody(msgspec.Struct):
    detail: list[ValidationErrorItem]


class MessageBody(msgspec.Struct):
    message: str


# Workspaces
class WorkspaceCreate(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    organization_id: str | None = None
    description: str | None = None
    subscription_plan_id: str | None = None
    is_active: bool = True
    tags: list[str] = []
    region: str | None = None


class WorkspaceUpdate(msgspec.Struct):
    organization_id: str | None | UnsetType = UNSET
    name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    subscription_plan_id: str | None | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    region: str | UnsetType = UNSET


BucketStatus = Literal["pending", "ready", "failed"]


class Workspace(msgspec.Struct):
    workspace_id: str
    name: str
    description: str | None
    owner_id: str | None
    subscription_plan_id: str | None
    is_active: bool
    tags: list[str]
    region: str
    s3_bucket: str | None
    bucket_status: BucketStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, state: WorkspaceState) -> Workspace:
        return cls(
            workspace_id=state.workspace_id,
            name=state.name,
            description=state.description,
            owner_id=state.owner_id,
            subscription_plan_id=state.subscription_plan_id,
            is_active=state.is_active,
            tags=state.tags,
            region=state.region,
            s3_bucket=state.s3_bucket,
            bucket_status=state.bucket_status,  # type: ignore[arg-type]
            created_at=state.created_at,
            updated_at=state.updated_at,
        )


class WorkspaceList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    workspaces: list[Workspace]


# Tokens
Role = Literal["owner", "admin", "member", "viewer", "auditor"]


class TokenCreate(msgspec.Struct):
    name: str
    role: str
    user_id: str | None = None
    principal_type: str = "user"


class Token(msgspec.Struct):
    token_id: str
    name: str
    role: str
    user_id: str | None
    principal_type: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    is_active: bool


class TokenIssued(msgspec.Struct):
    token_id: str
    token: Annotated[str, msgspec.Meta(description="The secret bearer token. Shown once; only its hash is kept.")]
    name: str
    role: str
    user_id: str | None
    principal_type: str
    created_at: datetime


class TokenList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    tokens: list[Token]


# Health
class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = {}


# Environments
class EnvironmentCreate(msgspec.Struct):
    name: str
    slug: str | None = None
    description: str | None = None
    is_default: bool | None = None


class EnvironmentUpdate(msgspec.Struct):
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


class DeployRequest(msgspec.Struct):
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
