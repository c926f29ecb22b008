"""Parameters and helpers every controller shares."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response
from litestar.params import FromPath, HeaderParameter, QueryParameter

from commands.aggregates import Outcome
from domain.errors import NotFound
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


async def require_workspace_view(conn, org_id: str, workspace_id: str) -> None:
    """Things inside a deleted or unknown workspace answer 404 for the workspace."""
    if await get_workspace(conn, org_id, workspace_id) is None:
        raise NotFound("workspace", workspace_id)
