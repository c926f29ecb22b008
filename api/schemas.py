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
            workspace_id=state.workspace_id, name=state.name, description=state.description,
            owner_id=state.owner_id, subscription_plan_id=state.subscription_plan_id, is_active=state.is_active,
            tags=state.tags, region=state.region, s3_bucket=state.s3_bucket,
            bucket_status=state.bucket_status,  # type: ignore[arg-type]
            created_at=state.created_at, updated_at=state.updated_at,
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
