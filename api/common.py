"""Parameters and helpers every controller shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Response
from litestar.params import FromPath, HeaderParameter, QueryParameter
from psycopg_pool import AsyncConnectionPool

from api.cache import ViewCache
from api.schemas.workspaces import Workspace
from commands.unit_of_work import Outcome
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.workspace import WORKSPACE
from eventstore import Codec
from projections.read_your_writes import ReadYourWrites
from projections.stored import stored
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


def command_answer(body: Any, outcome: Outcome, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, headers={EVENT_POSITION: str(outcome.position)})


class Views:
    """The read models as a query handler reads them: connections to them, read-your-writes waiting, the
    workspace every read under a workspace needs (from the API process's cache when it has it), and the process's
    codec, for what the event store holds when a view has not got it yet (`projections.stored`).

    One dependency for all of it, so that a query handler asks for one (`api.app` says why that matters)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        read_your_writes: ReadYourWrites,
        workspace_cache: ViewCache[Workspace],
        codec: Codec,
    ) -> None:
        self.pool = pool
        self.read_your_writes = read_your_writes
        self.workspace_cache = workspace_cache
        self.codec = codec

    def connection(self):
        return self.pool.connection()

    async def wait_for(self, names: list[str], position: int | None) -> None:
        if position:
            await self.read_your_writes.wait_for(names, position)

    async def find_workspace(
        self, org_id: str, workspace_id: str, min_position: int | None, conn=None
    ) -> Workspace | None:
        """The workspace as its view holds it, from the cache (`api.cache`) when it has it; on `conn` when given,
        else on a connection taken only if the cache has not got it. A read that waited for a position
        (`X-Min-Position`) asks the view, and refreshes the cache with what it read: the cache may not have
        heard yet of the changes up to that position. A workspace the view has not got (yet) is looked up in the
        event store, so one that a command just created is found at once, by every API process."""

        async def on_connection(read):
            if conn is not None:
                return await read(conn)
            async with self.pool.connection() as own:
                return await read(own)

        async def load() -> Workspace | None:
            state = await on_connection(lambda on: get_workspace(on, org_id, workspace_id))
            return None if state is None else Workspace.of(state)

        cache = self.workspace_cache
        if min_position is not None:
            workspace = await cache.refresh(org_id, workspace_id, load)
        else:
            workspace = await cache.read(org_id, workspace_id, load)
        if workspace is None:
            # Never cached: the cache hears only of changes the view has applied, so it would go on serving this
            # one after a deletion that the view has not caught up with.
            state = await on_connection(lambda on: stored(on, self.codec, WORKSPACE, workspace_id, org_id))
            workspace = None if state is None else Workspace.of(state)
        return workspace

    async def require_workspace(self, conn, org_id: str, workspace_id: str, min_position: int | None = None) -> None:
        """Things inside a deleted or unknown workspace answer 404 for the workspace (not one just created)."""
        if await self.find_workspace(org_id, workspace_id, min_position, conn) is None:
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
    try:  # in UTC, or Python's datetime range (years 1-9999) ends in the middle of its arithmetic
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise ValidationFailed(
            [FieldError((name,), "Input should be a time within years 1-9999 in UTC", "datetime_range", value)],
            source="query",
        ) from None


def time_window(start_time: str | None, end_time: str | None) -> dict[str, datetime | None]:
    """The start_time/end_time query pair: ISO 8601, the end not before the start (else 422)."""
    start, end = _time("start_time", start_time), _time("end_time", end_time)
    if start and end and end < start:
        raise ValidationFailed(
            [FieldError(("end_time",), "end_time must not be before start_time", "value_error", end_time)],
            source="query",
        )
    return {"start_time": start, "end_time": end}
