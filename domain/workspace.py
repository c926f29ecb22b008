"""The Workspace aggregate: its state, commands, events and rules."""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import UNSET, UnsetType

from domain.errors import Conflict, NotFound, Rules
from domain.events import AggregateType, DomainEvent, EventMeta, Upcaster

REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-south-1",
)
DEFAULT_REGION = "us-east-1"
MAX_TAGS = 20
MAX_TAG_LENGTH = 50


class WorkspaceState(msgspec.Struct):
    workspace_id: str
    org_id: str
    name: str
    description: str | None
    owner_id: str | None
    subscription_plan_id: str | None
    is_active: bool
    tags: list[str]
    region: str
    s3_bucket: str | None
    bucket_status: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


# Commands
class CreateWorkspace(msgspec.Struct, frozen=True):
    workspace_id: str
    org_id: str
    name: str
    owner_id: str | None
    organization_id: str | None = None
    description: str | None = None
    subscription_plan_id: str | None = None
    is_active: bool = True
    tags: list[str] = []
    region: str | None = None


class UpdateWorkspace(msgspec.Struct, frozen=True):
    organization_id: str | None | UnsetType = UNSET
    name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    subscription_plan_id: str | None | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    region: str | UnsetType = UNSET


class DeleteWorkspace(msgspec.Struct, frozen=True):
    pass


class RecordBucketProvisioned(msgspec.Struct, frozen=True):
    s3_bucket: str


class RecordBucketFailed(msgspec.Struct, frozen=True):
    reason: str


# Events
class WorkspaceCreated(DomainEvent, frozen=True):
    workspace_id: str
    name: str
    description: str | None
    owner_id: str | None
    subscription_plan_id: str | None
    is_active: bool
    tags: list[str]
    region: str


class WorkspaceUpdated(DomainEvent, frozen=True, omit_defaults=True):
    name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    subscription_plan_id: str | None | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    region: str | UnsetType = UNSET


class WorkspaceDeleted(DomainEvent, frozen=True):
    pass


class WorkspaceBucketProvisioned(DomainEvent, frozen=True):
    s3_bucket: str


class WorkspaceBucketFailed(DomainEvent, frozen=True):
    reason: str


def _labels_became_tags(data: dict) -> dict:
    """Before versioning, a workspace had comma-separated `labels`, and neither region nor plan nor is_active."""
    labels = data.pop("labels", "") or ""
    data.setdefault("tags", [label.strip() for label in labels.split(",") if label.strip()])
    data.setdefault("region", DEFAULT_REGION)
    data.setdefault("subscription_plan_id", None)
    data.setdefault("is_active", True)
    return data


UPCASTERS = (Upcaster("WorkspaceCreated", 0, _labels_became_tags),)
EVENTS = (
    WorkspaceCreated,
    WorkspaceUpdated,
    WorkspaceDeleted,
    WorkspaceBucketProvisioned,
    WorkspaceBucketFailed,
)

WorkspaceCommand = CreateWorkspace | UpdateWorkspace | DeleteWorkspace | RecordBucketProvisioned | RecordBucketFailed


def _check_fields(org_id: str, command: CreateWorkspace | UpdateWorkspace) -> None:
    """The rules on a workspace's fields, for a create and for the fields an update gives (others are UNSET)."""
    rules = Rules()
    organization_id, name, tags, region = command.organization_id, command.name, command.tags, command.region
    description, subscription_plan_id = command.description, command.subscription_plan_id
    if isinstance(description, str):
        rules.text("description", description, min_length=0, max_length=2000)
    if isinstance(subscription_plan_id, str):
        rules.text("subscription_plan_id", subscription_plan_id, min_length=1, max_length=100)
    if isinstance(organization_id, str) and organization_id != org_id:
        rules.fail(
            "organization_id",
            "organization_id must equal the organization in the path",
            "value_error",
            organization_id,
            expected=org_id,
        )
    if isinstance(name, str):
        rules.text("name", name, min_length=1, max_length=100)
    if isinstance(region, str) and region not in REGIONS:
        rules.fail("region", f"Input should be one of: {', '.join(REGIONS)}", "enum", region, expected=list(REGIONS))
    if isinstance(tags, list):
        if len(tags) > MAX_TAGS:
            rules.fail("tags", f"List should have at most {MAX_TAGS} items", "too_long", tags, max_length=MAX_TAGS)
        for i, tag in enumerate(tags):
            rules.text(("tags", str(i)), tag, min_length=1, max_length=MAX_TAG_LENGTH)
    rules.check()


def decide(state: WorkspaceState | None, command: WorkspaceCommand) -> list[DomainEvent]:
    if isinstance(command, CreateWorkspace):
        if state is not None:
            raise Conflict("Workspace already exists", workspace_id=command.workspace_id)
        _check_fields(command.org_id, command)
        return [
            WorkspaceCreated(
                workspace_id=command.workspace_id,
                name=command.name,
                description=command.description,
                owner_id=command.owner_id,
                subscription_plan_id=command.subscription_plan_id,
                is_active=command.is_active,
                tags=list(command.tags),
                region=command.region or DEFAULT_REGION,
            )
        ]
    assert state is not None, "the command layer answers 404 for a workspace that never existed"
    if state.deleted:
        raise NotFound("workspace", state.workspace_id)
    match command:
        case UpdateWorkspace():
            _check_fields(state.org_id, command)
            return [
                WorkspaceUpdated(
                    name=command.name,
                    description=command.description,
                    subscription_plan_id=command.subscription_plan_id,
                    is_active=command.is_active,
                    tags=command.tags,
                    region=command.region,
                )
            ]
        case DeleteWorkspace():
            return [WorkspaceDeleted()]
        case RecordBucketProvisioned():
            # Redelivery of the created event provisions again; only the first outcome is recorded.
            if state.bucket_status == "ready":
                return []
            return [WorkspaceBucketProvisioned(s3_bucket=command.s3_bucket)]
        case RecordBucketFailed():
            if state.bucket_status != "pending":
                return []
            return [WorkspaceBucketFailed(reason=command.reason)]
    raise TypeError(f"not a workspace command: {command!r}")


def evolve(state: WorkspaceState | None, event: DomainEvent, meta: EventMeta) -> WorkspaceState:
    if isinstance(event, WorkspaceCreated):
        return WorkspaceState(
            workspace_id=event.workspace_id,
            org_id=meta.org_id,
            name=event.name,
            description=event.description,
            owner_id=event.owner_id,
            subscription_plan_id=event.subscription_plan_id,
            is_active=event.is_active,
            tags=list(event.tags),
            region=event.region,
            s3_bucket=None,
            bucket_status="pending",
            created_at=meta.occurred_at,
            updated_at=meta.occurred_at,
        )
    assert state is not None, f"{type(event).__name__} before WorkspaceCreated"
    match event:
        case WorkspaceUpdated():
            changes = {f: getattr(event, f) for f in event.__struct_fields__ if getattr(event, f) is not UNSET}
            return msgspec.structs.replace(state, **changes, updated_at=meta.occurred_at)
        case WorkspaceDeleted():
            return msgspec.structs.replace(state, deleted=True, is_active=False, updated_at=meta.occurred_at)
        case WorkspaceBucketProvisioned():
            return msgspec.structs.replace(
                state, s3_bucket=event.s3_bucket, bucket_status="ready", updated_at=meta.occurred_at
            )
        case WorkspaceBucketFailed():
            return msgspec.structs.replace(state, bucket_status="failed", updated_at=meta.occurred_at)
    raise TypeError(f"not a workspace event: {event!r}")


WORKSPACE = AggregateType(
    "workspace", decide, evolve, creates=(CreateWorkspace,), events=EVENTS, upcasters=UPCASTERS
)
