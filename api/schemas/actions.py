"""Actions and their runs on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.common import RequestBody

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
