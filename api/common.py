"""Parameters and helpers every controller shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response
from litestar.params import FromPath, HeaderParameter, QueryParameter

from api.schemas import Workspace
from commands.aggregates import Outcome
from domain.errors import FieldError, NotFound, ValidationFailed
from projections.workspaces import get_workspace

PathId = FromPath[str]
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Maximum number of items to return (1-200)")]
Cursor = Annotated[
    str | None, QueryParameter(description="Cursor for pagination (from previous response's next_cursor)")
]
MinPosition = Annotated[
    int | None,
    HeaderParameter(
        name="X-Min-Position",
        ge=0,
        required=False,
        description="Wait (bounded) until the views serving this query have applied this event position "
        "(the X-Event-Position of an earlier command).",
    ),
]

EVENT_POSITION = "X-Event-Position"
# Header parameters by their Python name, so validation errors can name the header itself.
HEADER_ALIASES = {"min_position": "x-min-position"}


def command_answer(body: Any, outcome: Outcome, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, headers={EVENT_POSITION: str(outcome.position)})


def system_of(request: Request):
    return request.app.state.system


async def find_workspace(
    request: Request, org_id: str, workspace_id: str, min_position: int | None, conn=None
) -> Workspace | None:
    """The workspace as its view holds it, from the API process's cache when it has it (`api.cache`); on `conn`
    when given, else on a connection taken only if the cache has not got it. A read that waited for a position
    (`X-Min-Position`) asks the view, and refreshes the cache with what it read: the cache may not have heard
    yet of the changes up to that position."""
    system = system_of(request)

    async def load() -> Workspace | None:
        if conn is not None:
            state = await get_workspace(conn, org_id, workspace_id)
        else:
            async with system.pool.connection() as own:
                state = await get_workspace(own, org_id, workspace_id)
        return None if state is None else Workspace.of(state)

    cache = system.workspace_cache
    if min_position is not None:
        return await cache.refresh(org_id, workspace_id, load)
    return await cache.read(org_id, workspace_id, load)


async def require_workspace_view(
    request: Request, conn, org_id: str, workspace_id: str, min_position: int | None = None
) -> None:
    """Things inside a deleted or unknown workspace answer 404 for the workspace."""
    if await find_workspace(request, org_id, workspace_id, min_position, conn) is None:
        raise NotFound("workspace", workspace_id)


Time = Annotated[str | None, QueryParameter(description="ISO 8601 timestamp")]


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            [FieldError((name,), "Input should be an ISO 8601 timestamp", "datetime_parsing", value)], source="query"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def time_window(start_time: str | None, end_time: str | None) -> dict[str, datetime | None]:
    """The start_time/end_time query pair: ISO 8601, the end not before the start (else 422)."""
    start, end = _time("start_time", start_time), _time("end_time", end_time)
    if start and end and end < start:
        raise ValidationFailed(
            [FieldError(("end_time",), "end_time must not be before start_time", "value_error", end_time)],
            source="query",
        )
    return {"start_time": start, "end_time": end}
