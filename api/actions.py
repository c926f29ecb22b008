"""Actions and their runs: endpoints 1-10."""

from __future__ import annotations

from typing import Annotated

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, QueryParameter

from api.auth import context_of
from api.common import Cursor, Limit, MinPosition, PathId, Views, command_answer
from api.schemas.actions import (
    ActionCreate,
    ActionList,
    ActionUpdate,
    ActionView,
    RunList,
    RunStatus,
    RunView,
    Triggered,
    TriggerRequest,
)
from commands import actions as use_cases
from commands.unit_of_work import CommandRunner
from domain.errors import CONTROL_CHARACTERS, FieldError, NotFound, ValidationFailed
from projections import actions as listing
from projections import catalog, workspaces
from projections.pagination import Page, decode_cursor
from projections.stored import stored_action, stored_item, stored_run

VIEWS = [listing.NAME, workspaces.NAME, catalog.NAME]


def _fields(data: msgspec.Struct) -> dict:
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}


async def _action(
    views: Views, conn, org_id: str, workspace_id: str, app_id: str, action_id: str, min_position: int | None
):
    await views.require_workspace(conn, org_id, workspace_id, min_position)
    found = await listing.get_action(conn, org_id, app_id, action_id)
    if found is None and (stored := await stored_action(conn, views.codec, org_id, workspace_id, app_id, action_id)):
        found = (stored, None)  # one just created; run counters come only from the view, which has none for it yet
    if found is None or found[0].workspace_id != workspace_id:
        raise NotFound("action", action_id)
    return found


async def _with_counters(views: Views, org_id: str, app_id: str, outcome) -> Response[ActionView]:
    """A command's answer: the action from the write model, its run counters from the view."""
    async with views.connection() as conn:
        found = await listing.get_action(conn, org_id, app_id, outcome.state.action_id)
    return command_answer(ActionView.of(outcome.state, found[1] if found else None), outcome)


async def _set_enabled(
    request: Request,
    commands: CommandRunner,
    views: Views,
    org_id: str,
    workspace_id: str,
    app_id: str,
    action_id: str,
    enabled: bool,
) -> Response[ActionView]:
    outcome = await anyio.to_thread.run_sync(
        use_cases.set_enabled, commands, context_of(request), workspace_id, app_id, action_id, enabled
    )
    return await _with_counters(views, org_id, app_id, outcome)


class ActionController(Controller):
    path = "/v1/orgs/{org_id:str}/workspaces/{workspace_id:str}/apps/{app_id:str}/actions"
    tags = ["Actions"]

    @get("/", opt={"permission": "action:read"}, summary="List Actions")
    async def list_actions(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        search: Annotated[
            str | None, QueryParameter(description="Search by name or description", max_length=200)
        ] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> ActionList:
        after = decode_cursor(cursor)
        if search is not None and CONTROL_CHARACTERS.search(search):
            raise ValidationFailed(
                [
                    FieldError(
                        ("search",), "search must not contain control characters", "string_pattern_mismatch", search
                    )
                ],
                source="query",
            )
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            await views.require_workspace(conn, org_id, workspace_id, min_position)
            app = await catalog.get_item(conn, org_id, workspace_id, "apps", app_id)
            if app is None and await stored_item(conn, views.codec, org_id, workspace_id, "apps", app_id) is None:
                raise NotFound("app", app_id)
            total, rows = await listing.list_actions(conn, org_id, workspace_id, app_id, search, after, limit)
        page = Page(rows, limit, key_of=lambda row: row[0])
        return ActionList(
            total=total,
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            actions=[ActionView.of(state, counters) for _, state, counters in page.items],
        )

    @post("/", opt={"permission": "action:create"}, summary="Create Action", status_code=201, sync_to_thread=True)
    def create_action(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        data: JSONBody[ActionCreate],
    ) -> Response[ActionView]:
        outcome = use_cases.create_action(
            commands, context_of(request), workspace_id, app_id, msgspec.structs.asdict(data)
        )
        return command_answer(ActionView.of(outcome.state), outcome, 201)

    @get("/{action_id:str}", opt={"permission": "action:read"}, summary="Get Action")
    async def get_action(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
        min_position: MinPosition = None,
    ) -> ActionView:
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            state, counters = await _action(views, conn, org_id, workspace_id, app_id, action_id, min_position)
        return ActionView.of(state, counters)

    @put("/{action_id:str}", opt={"permission": "action:update"}, summary="Update Action")
    async def update_action(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
        data: JSONBody[ActionUpdate],
    ) -> Response[ActionView]:
        outcome = await anyio.to_thread.run_sync(
            use_cases.update_action,
            commands,
            context_of(request),
            workspace_id,
            app_id,
            action_id,
            _fields(data),
        )
        return await _with_counters(views, org_id, app_id, outcome)

    @delete(
        "/{action_id:str}",
        opt={"permission": "action:delete"},
        summary="Delete Action",
        status_code=204,
        sync_to_thread=True,
    )
    def delete_action(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
    ) -> Response[None]:
        outcome = use_cases.delete_action(commands, context_of(request), workspace_id, app_id, action_id)
        return command_answer(None, outcome, 204)

    @post(
        "/{action_id:str}/enable",
        opt={"permission": "action:update"},
        summary="Enable Action",
        status_code=200,
    )
    async def enable_action(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
    ) -> Response[ActionView]:
        return await _set_enabled(request, commands, views, org_id, workspace_id, app_id, action_id, True)

    @post(
        "/{action_id:str}/disable",
        opt={"permission": "action:update"},
        summary="Disable Action",
        status_code=200,
    )
    async def disable_action(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
    ) -> Response[ActionView]:
        return await _set_enabled(request, commands, views, org_id, workspace_id, app_id, action_id, False)

    @post(
        "/{action_id:str}/trigger",
        opt={"permission": "action:trigger"},
        summary="Trigger Action",
        status_code=202,
        sync_to_thread=True,
    )
    def trigger_action(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
        data: JSONBody[TriggerRequest | None] = None,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                max_length=200,
                required=False,
                description="Repeating a trigger with the same key answers the same run",
            ),
        ] = None,
    ) -> Response[Triggered]:
        body = data or TriggerRequest()
        outcome = use_cases.trigger_action(
            commands,
            context_of(request),
            workspace_id,
            app_id,
            action_id,
            body.payload,
            body.thread_id,
            idempotency_key,
        )
        run = outcome.state
        return command_answer(
            Triggered(
                action_id=action_id,
                run_id=run.run_id,
                execution_id=run.execution_id,
                status=run.status,
                message="Action triggered",
            ),
            outcome,
            202,
        )

    @get("/{action_id:str}/runs", opt={"permission": "action:read"}, summary="List Action Runs")
    async def list_runs(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
        status: Annotated[RunStatus | None, QueryParameter(description="Filter by status")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> RunList:
        before = decode_cursor(cursor)
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            await _action(views, conn, org_id, workspace_id, app_id, action_id, min_position)
            total, rows = await listing.list_runs(conn, org_id, action_id, status, before, limit)
        page = Page(rows, limit, key_of=lambda row: row[0])
        return RunList(
            total=total,
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            runs=[RunView.of(run) for _, run in page.items],
        )

    @get("/{action_id:str}/runs/{run_id:str}", opt={"permission": "action:read"}, summary="Get Action Run")
    async def get_run(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        action_id: PathId,
        run_id: PathId,
        min_position: MinPosition = None,
    ) -> RunView:
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            await _action(views, conn, org_id, workspace_id, app_id, action_id, min_position)
            run = await listing.get_run(conn, org_id, action_id, run_id)
            if run is None:  # not in the view (yet): one just triggered is in the event store
                run = await stored_run(conn, views.codec, org_id, action_id, run_id)
        if run is None:
            raise NotFound("run", run_id)
        return RunView.of(run)
