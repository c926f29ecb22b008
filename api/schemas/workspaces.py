"""Workspaces on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.common import RequestBody
from domain.workspace import WorkspaceState


class WorkspaceCreate(RequestBody):
    name: str
    organization_id: str | None = None
    description: str | None = None
    subscription_plan_id: str | None = None
    is_active: bool = True
    tags: list[str] = []
    region: str | None = None


class WorkspaceUpdate(RequestBody):
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
