"""Activity records and their summary on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec


class ActivityView(msgspec.Struct):
    """An activity record as the API shows it, decoded straight from the stored record's JSON
    (activity.queries.feed): each field is one of ActivityRecord's, all of which are always stored."""

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
