"""The auditors' raw event stream: a paged read and a live tail (server-sent events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.auth import Authorizer
from api.common import Cursor, Limit, PathId, Time, Views, time_window
from api.errors import Unauthorized
from projections import audit
from projections.pagination import decode_cursor, encode_cursor


class EventPage(msgspec.Struct):
    total: Annotated[int, msgspec.Meta(description="Events the filter matches (after `after`), on every page")]
    has_more: bool
    next_cursor: str | None
    events: list[audit.AuditEvent]


After = Annotated[int | None, QueryParameter(ge=0, description="Only events after this log position")]
_encoder = msgspec.json.Encoder()


async def _still_valid(authorizer: Authorizer, request: Request) -> bool:
    """Whether the stream's token still authenticates, asked before each read of the log: a revocation ends an
    open stream as it ends the token's next request, within the token cache's 2 s (from the cache, confirmed
    against the store every second; the store itself once the cache has dropped a revoked token)."""
    try:
        await authorizer.authenticate(request)
    except Unauthorized:
        return False
    return True


class AuditController(Controller):
    path = "/v1/orgs/{org_id:str}/events"
    tags = ["Audit"]
    opt = {"permission": "audit:read"}

    @get("/", summary="Read the org's raw events in log order")
    async def read(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        after: After = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        type: Annotated[str | None, QueryParameter(max_length=100)] = None,
        aggregate_id: Annotated[str | None, QueryParameter(max_length=128)] = None,
        start_time: Time = None,
        end_time: Time = None,
    ) -> EventPage:
        start = decode_cursor(cursor) or after or 0
        query = audit.Query(type=type, aggregate_id=aggregate_id, **time_window(start_time, end_time))
        async with views.connection() as conn:
            total, rows = await audit.page(conn, views.codec, org_id, after or 0, start, limit + 1, query)
        more = len(rows) > limit
        rows = rows[:limit]
        return EventPage(
            total=total, has_more=more, next_cursor=encode_cursor(rows[-1].position) if more else None, events=rows
        )

    @get("/stream", summary="Tail the org's raw events (server-sent events; resumes from Last-Event-ID)")
    async def stream(
        self,
        request: Request,
        authorizer: NamedDependency[Authorizer],
        views: NamedDependency[Views],
        org_id: PathId,
        after: After = None,
        last_event_id: Annotated[
            int | None,
            HeaderParameter(
                name="Last-Event-ID", required=False, ge=0, description="The `id` (position) of the last event seen"
            ),
        ] = None,
    ) -> ServerSentEvent:
        # the ids this stream sends are positions: anything else is refused (422), not silently read as `after`
        start = last_event_id if last_event_id is not None else after or 0

        async def tail() -> AsyncIterator[ServerSentEventMessage]:
            position = start
            while await _still_valid(authorizer, request):
                async with views.connection() as conn:
                    rows = await audit.events(conn, views.codec, org_id, position, 500)
                for row in rows:
                    position = row.position
                    yield ServerSentEventMessage(data=_encoder.encode(row).decode(), event=row.type, id=row.position)
                if not rows:
                    await asyncio.sleep(0.25)

        return ServerSentEvent(tail())
