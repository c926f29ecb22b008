"""Activity feeds and summaries: endpoints 24-38."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from activity import queries
from activity.records import ACTIONS
from api.common import Cursor, Limit, PathId, Time, Views, time_window
from api.schemas.activity import ActivityList, ActivitySummary, ActivityView
from domain.errors import FieldError, NotFound, ValidationFailed
from projections import catalog
from projections.pagination import Page, decode_time_cursor
from projections.stored import stored_item

VERBS = ACTIONS
Hours = Annotated[int, QueryParameter(ge=1, le=168, description="Hours to look back")]
OptionalId = Annotated[str | None, QueryParameter(max_length=128)]


async def _feed(
    request: Request,
    views: Views,
    org_id: str,
    limit: int,
    cursor: str | None,
    start_time: str | None,
    end_time: str | None,
    workspace_id: str | None = None,
    **filters,
) -> ActivityList:
    after = decode_time_cursor(cursor)
    selection = queries.Filters(workspace_id=workspace_id, **filters, **time_window(start_time, end_time))
    async with views.connection() as conn:
        if workspace_id is not None and "workspace_id" in request.path_params:
            await views.require_workspace(conn, org_id, workspace_id)
            await _require_endpoint_of_app(request, views, conn, org_id, workspace_id)
        total, rows = await queries.feed(conn, org_id, selection, after, limit, ActivityView)
    page = Page(rows, limit, key_of=queries.key_of)
    return ActivityList(total=total, has_more=page.has_more, next_cursor=page.next_cursor, activities=page.items)


async def _summary(
    request: Request, views: Views, org_id: str, scope: str, scope_id: str, hours: int
) -> ActivitySummary:
    async with views.connection() as conn:
        if "workspace_id" in request.path_params:
            await views.require_workspace(conn, org_id, request.path_params["workspace_id"])
            await _require_endpoint_of_app(request, views, conn, org_id, request.path_params["workspace_id"])
        result = await queries.summary(conn, org_id, scope, scope_id, hours, datetime.now(UTC))
    return msgspec.convert(result, ActivitySummary, from_attributes=True)


async def _require_endpoint_of_app(request: Request, views: Views, conn, org_id: str, workspace_id: str) -> None:
    """An endpoint's feeds are found under its own app only: 404 for an unknown endpoint or another app's."""
    endpoint_id = request.path_params.get("endpoint_id")
    if endpoint_id is None:
        return
    endpoint = await catalog.get_item(conn, org_id, workspace_id, "endpoints", endpoint_id)
    if endpoint is None:  # not in the view (yet): one just created is in the event store
        endpoint = await stored_item(conn, views.codec, org_id, workspace_id, "endpoints", endpoint_id)
    if endpoint is None or endpoint.fields.get("app_id") != request.path_params["app_id"]:
        raise NotFound("endpoint", endpoint_id)


def _me(request: Request) -> str:
    actor = request.state.principal.actor
    return actor.user_id or actor.principal_id


class OrgActivityController(Controller):
    path = "/v1/orgs/{org_id:str}"
    tags = ["Activity"]

    @get("/activity", opt={"permission": "activity:read"}, summary="Get Org Activity")
    async def org_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(request, views, org_id, limit, cursor, start_time, end_time)

    @get("/activity/summary", opt={"permission": "activity:read"}, summary="Get Org Activity Summary")
    async def org_summary(
        self, request: Request, views: NamedDependency[Views], org_id: PathId, hours: Hours = 24
    ) -> ActivitySummary:
        return await _summary(request, views, org_id, "org", org_id, hours)

    @get("/users/{user_id:str}/activity", opt={"permission": "activity:read"}, summary="Get User Activity")
    async def user_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        user_id: PathId,
        workspace_id: OptionalId = None,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(request, views, org_id, limit, cursor, start_time, end_time, workspace_id, user_id=user_id)

    @get(
        "/users/{user_id:str}/activity/summary",
        opt={"permission": "activity:read"},
        summary="Get User Activity Summary",
    )
    async def user_summary(
        self, request: Request, views: NamedDependency[Views], org_id: PathId, user_id: PathId, hours: Hours = 24
    ) -> ActivitySummary:
        return await _summary(request, views, org_id, "user", user_id, hours)

    @get("/me/activity", summary="Get My Activity")
    async def my_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: OptionalId = None,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(
            request, views, org_id, limit, cursor, start_time, end_time, workspace_id, user_id=_me(request)
        )

    @get("/me/activity/summary", summary="Get My Activity Summary")
    async def my_summary(
        self, request: Request, views: NamedDependency[Views], org_id: PathId, hours: Hours = 24
    ) -> ActivitySummary:
        return await _summary(request, views, org_id, "user", _me(request), hours)


class WorkspaceActivityController(Controller):
    path = "/v1/orgs/{org_id:str}/workspaces/{workspace_id:str}"
    tags = ["Activity"]
    opt = {"permission": "workspace:read"}

    @get("/activity", summary="Get Workspace Activity")
    async def workspace_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(request, views, org_id, limit, cursor, start_time, end_time, workspace_id)

    @get("/activity/summary", summary="Get Workspace Activity Summary")
    async def workspace_summary(
        self, request: Request, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, hours: Hours = 24
    ) -> ActivitySummary:
        return await _summary(request, views, org_id, "workspace", workspace_id, hours)

    @get("/apps/{app_id:str}/activity", summary="Get App Activity")
    async def app_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(request, views, org_id, limit, cursor, start_time, end_time, workspace_id, app_id=app_id)

    @get("/apps/{app_id:str}/endpoints/{endpoint_id:str}/activity", summary="Get Endpoint Activity")
    async def endpoint_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        endpoint_id: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(
            request,
            views,
            org_id,
            limit,
            cursor,
            start_time,
            end_time,
            workspace_id,
            resource_type="endpoint",
            resource_id=endpoint_id,
        )

    @get("/apps/{app_id:str}/endpoints/{endpoint_id:str}/activity/summary", summary="Get Endpoint Activity Summary")
    async def endpoint_summary(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        endpoint_id: PathId,
        hours: Hours = 24,
    ) -> ActivitySummary:
        return await _summary(request, views, org_id, "endpoint", endpoint_id, hours)

    @get("/augmentations/{augmentation_id:str}/activity", summary="Get Augmentation Activity")
    async def augmentation_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        augmentation_id: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(
            request, views, org_id, limit, cursor, start_time, end_time, workspace_id, augmentation_id=augmentation_id
        )

    @get("/activity/actions/{action:str}", summary="Get Action Activity")
    async def verb_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        action: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        if action not in VERBS:
            raise ValidationFailed(
                [FieldError(("action",), f"Input should be one of: {', '.join(VERBS)}", "enum", action)], source="path"
            )
        return await _feed(request, views, org_id, limit, cursor, start_time, end_time, workspace_id, action=action)

    @get("/resources/{resource_id:str}/activity", summary="Get Resource Activity")
    async def resource_activity(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        resource_id: PathId,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        return await _feed(
            request, views, org_id, limit, cursor, start_time, end_time, workspace_id, resource_id=resource_id
        )

    @get("/activity/search", summary="Search Workspace Activity")
    async def search(
        self,
        request: Request,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        action: Annotated[
            str | None, QueryParameter(description="create, read, update, delete, execute, trigger")
        ] = None,
        resource_type: OptionalId = None,
        user_id: OptionalId = None,
        status: Annotated[str | None, QueryParameter(description="success or error")] = None,
        min_duration_ms: Annotated[float | None, QueryParameter(ge=0)] = None,
        max_duration_ms: Annotated[float | None, QueryParameter(ge=0)] = None,
        start_time: Time = None,
        end_time: Time = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ActivityList:
        errors = []
        if action is not None and action not in VERBS:
            errors.append(FieldError(("action",), f"Input should be one of: {', '.join(VERBS)}", "enum", action))
        if status is not None and status not in ("success", "error"):
            errors.append(FieldError(("status",), "Input should be 'success' or 'error'", "enum", status))
        if min_duration_ms is not None and max_duration_ms is not None and max_duration_ms < min_duration_ms:
            errors.append(
                FieldError(
                    ("max_duration_ms",),
                    "max_duration_ms must not be below min_duration_ms",
                    "value_error",
                    max_duration_ms,
                )
            )
        if errors:
            raise ValidationFailed(errors, source="query")
        return await _feed(
            request,
            views,
            org_id,
            limit,
            cursor,
            start_time,
            end_time,
            workspace_id,
            action=action,
            resource_type=resource_type,
            user_id=user_id,
            success=None if status is None else status == "success",
            min_duration_ms=min_duration_ms,
            max_duration_ms=max_duration_ms,
        )
