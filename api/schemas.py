"""Wire types: request and response bodies, in the seeds' exact shapes. Never events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar._openapi.schema_generation import SchemaCreator  # no public home for the Struct schema plugin
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition
from msgspec import UNSET, UnsetType

from domain.workspace import WorkspaceState


class RequestBody(msgspec.Struct, forbid_unknown_fields=True):
    """Every request body refuses fields it does not know (422), so a client's typo is not silently dropped."""


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schemas, saying `additionalProperties: false` for Structs that refuse unknown fields."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if msgspec.inspect.type_info(field_definition.type_).forbid_unknown_fields:  # type: ignore[union-attr]
            schema.additional_properties = False
        return schema


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


# Tokens
Role = Literal["owner", "admin", "member", "viewer", "auditor"]


class TokenCreate(RequestBody):
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
    consumers: dict[str, dict[str, float]] = {}


# Environments
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


# Actions
ThreadMode = Literal["new_each_run", "fixed", "template"]
ActionType = Literal["trigger", "scheduled"]
ScheduleType = Literal["cron", "once"]
RunStatus = Literal["pending", "running", "success", "failed"]


class ActionCreate(RequestBody):
    name: str
    endpoint_id: str
    namespace_id: str
    description: str | None = None
    thread_mode: ThreadMode = "new_each_run"
    thread_id: str | None = None
    thread_id_template: Annotated[
        str | None,
        msgspec.Meta(
            description="With thread_mode 'template': may use {action_id}, {run_id}, {date} and {payload.KEY}"
        ),
    ] = None
    payload: dict[str, Any] = {}
    action_type: ActionType = "trigger"
    schedule_type: ScheduleType | None = None
    cron_expression: Annotated[str | None, msgspec.Meta(description="5 fields: minute hour day month weekday")] = None
    scheduled_at: datetime | None = None
    timezone: Annotated[str, msgspec.Meta(description="IANA time zone of the cron expression")] = "UTC"
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    retry_delay_seconds: Annotated[int, msgspec.Meta(ge=0, le=86400)] = 60
    is_enabled: bool = True


class ActionUpdate(RequestBody):
    name: str | UnsetType = UNSET
    endpoint_id: str | UnsetType = UNSET
    namespace_id: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    thread_mode: ThreadMode | UnsetType = UNSET
    thread_id: str | None | UnsetType = UNSET
    thread_id_template: str | None | UnsetType = UNSET
    payload: dict[str, Any] | UnsetType = UNSET
    action_type: ActionType | UnsetType = UNSET
    schedule_type: ScheduleType | None | UnsetType = UNSET
    cron_expression: str | None | UnsetType = UNSET
    scheduled_at: datetime | None | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] | UnsetType = UNSET
    retry_delay_seconds: Annotated[int, msgspec.Meta(ge=0, le=86400)] | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET


class ActionView(msgspec.Struct):
    action_id: str
    workspace_id: str
    app_id: str
    endpoint_id: str
    name: str
    description: str | None
    namespace_id: str
    thread_mode: ThreadMode
    thread_id: str | None
    thread_id_template: str | None
    payload: dict[str, Any]
    action_type: ActionType
    schedule_type: ScheduleType | None
    cron_expression: str | None
    scheduled_at: datetime | None
    timezone: str
    max_retries: int
    retry_delay_seconds: int
    is_enabled: bool
    is_running: bool
    next_run_at: Annotated[datetime | None, msgspec.Meta(description="UTC; null when disabled or fired (once)")]
    last_run_at: datetime | None
    last_run_status: RunStatus | None
    last_execution_id: str | None
    total_runs: int
    successful_runs: int
    failed_runs: int
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, state, counters=None) -> ActionView:
        c = state.config
        return cls(
            action_id=state.action_id,
            workspace_id=state.workspace_id,
            app_id=state.app_id,
            endpoint_id=c.endpoint_id,
            name=c.name,
            description=c.description,
            namespace_id=c.namespace_id,
            thread_mode=c.thread_mode,
            thread_id=c.thread_id,
            thread_id_template=c.thread_id_template,
            payload=c.payload,
            action_type=c.action_type,
            schedule_type=c.schedule_type,
            cron_expression=c.cron_expression,
            scheduled_at=c.scheduled_at,
            timezone=c.timezone,
            max_retries=c.max_retries,
            retry_delay_seconds=c.retry_delay_seconds,
            is_enabled=c.is_enabled,
            is_running=counters.is_running if counters else False,
            next_run_at=state.next_run_at,
            last_run_at=counters.last_run_at if counters else None,
            last_run_status=counters.last_run_status if counters else None,
            last_execution_id=counters.last_execution_id if counters else None,
            total_runs=counters.total_runs if counters else 0,
            successful_runs=counters.successful_runs if counters else 0,
            failed_runs=counters.failed_runs if counters else 0,
            created_by=state.created_by,
            created_at=state.created_at,
            updated_at=state.updated_at,
        )


class ActionList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    actions: list[ActionView]


class TriggerRequest(RequestBody):
    payload: dict[str, Any] = {}
    thread_id: str | None = None


class Triggered(msgspec.Struct):
    action_id: str
    run_id: str
    execution_id: str
    status: RunStatus
    message: str


class RunView(msgspec.Struct):
    run_id: str
    action_id: str
    workspace_id: str
    execution_id: str
    status: RunStatus
    attempt: int
    trigger_type: Literal["manual", "scheduled"]
    triggered_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    resolved_payload: dict[str, Any]
    resolved_thread_id: str | None
    error_message: str | None
    error_code: str | None

    @classmethod
    def of(cls, run) -> RunView:
        return cls(**{f: getattr(run, f) for f in cls.__struct_fields__})


class RunList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    runs: list[RunView]


# Activity
class ActivityView(msgspec.Struct):
    """An activity record as the API shows it, decoded straight from the stored record's JSON
    (projections.activity.feed): each field is one of ActivityRecord's, all of which are always stored."""

    id: str
    timestamp: datetime
    trace_id: str
    user_id: str | None
    workspace_id: str | None
    app_id: str | None
    principal_type: str | None
    principal_id: str | None
    token_id: str | None
    token_type: str | None
    method: str | None
    path: str | None
    resource_type: str | None
    resource_id: str | None
    action: str
    status_code: int
    success: bool
    error_code: str | None
    duration_ms: float
    execution_id: str | None
    augmentation_id: str | None
    stages_completed: int | None
    total_stages: int | None
    token_usage: dict[str, int] | None
    metadata: dict[str, Any]


class ActivityList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    activities: list[ActivityView]


class ActivitySummary(msgspec.Struct):
    total_requests: int
    successful_requests: int
    failed_requests: int
    avg_duration_ms: float
    total_tokens_used: Annotated[int, msgspec.Meta(description="Sum of token_usage values of executions")]
    by_action: dict[str, int]
    by_resource: dict[str, int]
    start_time: datetime
    end_time: datetime


# Analytics
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
