"""Workspace, org, app, namespace and per-resource analytics on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec


class ResourceCounts(msgspec.Struct):
    sources: int
    augmentations: int
    endpoints: int
    namespaces: int
    apps: int
    threads: Annotated[int, msgspec.Meta(description="Catalog threads plus the threads that runs started")]
    actions: int
    secrets: int
    models: int


class ExecutionMetrics(msgspec.Struct):
    total: Annotated[int, msgspec.Meta(description="Executions with a final outcome; retries are attempts of one")]
    success: int
    failed: int
    success_rate: Annotated[
        float,
        msgspec.Meta(
            description="success / total as a percentage 0-100, two decimals; 0 when there is none", ge=0, le=100
        ),
    ]


class WorkspaceAnalytics(msgspec.Struct):
    workspace_id: str
    resources: ResourceCounts
    executions: ExecutionMetrics
    updated_at: Annotated[datetime | None, msgspec.Meta(description="Time of the last event applied")]


class SeriesPoint(msgspec.Struct):
    timestamp: datetime
    value: int


class Series(msgspec.Struct):
    metric: Literal["executions"]
    period: Literal["hourly", "daily"]
    data: Annotated[
        list[SeriesPoint], msgspec.Meta(description="Oldest first, aligned to UTC hours or days, zero-filled")
    ]


class AppAnalytics(msgspec.Struct):
    app_id: str
    augmentations: int
    namespaces: int
    endpoints: int
    releases: int


class NamespaceAnalytics(msgspec.Struct):
    namespace_id: str
    threads: int
    sources: int


class ActionAnalytics(msgspec.Struct):
    total_actions: int
    enabled_actions: int
    trigger_actions: int
    scheduled_actions: int


class SecretAnalytics(msgspec.Struct):
    total_secrets: int
    active_secrets: int
    secrets_by_type: dict[str, int]


class SourceAnalytics(msgspec.Struct):
    total_sources: int
    indexed_sources: int
    failed_sources: int
    pending_sources: int
    total_chunks: int
    total_tokens: int
    total_bytes: int
    workspace_sources: Annotated[int, msgspec.Meta(description="Sources in no namespace")]
    namespace_sources: int
    sources_by_type: dict[str, int]
    sources_by_status: dict[str, int]


class OrgWorkspaceRollup(msgspec.Struct):
    workspace_id: str
    name: str
    resources: ResourceCounts
    executions: ExecutionMetrics


class OrgAnalytics(msgspec.Struct):
    org_id: str
    workspace_count: int
    resources: ResourceCounts
    executions: ExecutionMetrics
    workspaces: list[OrgWorkspaceRollup]
    updated_at: datetime | None
