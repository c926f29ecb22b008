"""Actions and their runs: the action listing (with run counters) and the run history, in one view so
an action's counters and its runs always agree."""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg

from domain.action import ACTION, ActionState
from domain.events import Recorded
from domain.run import RUN, AttemptFailed, AttemptStarted, RunRequested, RunState, RunSucceeded
from projections.batches import Staging, earlier_streams, rows_for
from projections.pagination import counted_page

NAME = "actions"


_ACTIONS = Staging(
    "rm_actions",
    {
        "action_id": "text",
        "org_id": "text",
        "workspace_id": "text",
        "app_id": "text",
        "seq": "int8",
        "deleted": "bool",
        "search_text": "text",
        "next_run_at": "timestamptz",
        "state": "bytea",
    },
)
_RUNS = Staging(
    "rm_runs",
    {
        "run_id": "text",
        "org_id": "text",
        "action_id": "text",
        "seq": "int8",
        "status": "text",
        "due_at": "timestamptz",
        "lease_until": "timestamptz",
        "state": "bytea",
    },
)
_COUNTER_CHANGES = Staging(
    "action_counter_changes",
    {
        "action_id": "text",
        "requested": "int4",
        "succeeded": "int4",
        "failed": "int4",
        "running": "int4",
        "last_run_at": "timestamptz",
        "last_execution_id": "text",
        "last_run_status": "text",
    },
)
_action_decoder = msgspec.json.Decoder(ActionState)
_run_decoder = msgspec.json.Decoder(RunState)
_encoder = msgspec.json.Encoder()


class Counters(msgspec.Struct):
    total_runs: int
    successful_runs: int
    failed_runs: int
    last_run_at: datetime | None
    last_run_status: str | None
    last_execution_id: str | None
    running_runs: int = 0

    @property
    def is_running(self) -> bool:
        return self.running_runs > 0


class ActionListing:
    name = NAME

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        action_events, run_events = [], []
        for record in batch:
            if record.aggregate == "run":
                run_events.append(record)
            elif record.aggregate == "action":
                action_events.append(record)
        if action_events:
            await self._apply_actions(conn, action_events)
        if run_events:
            await self._apply_runs(conn, run_events)

    async def _apply_actions(self, conn, events: list[Recorded]) -> None:
        found = await rows_for(
            conn, "SELECT action_id, seq, state FROM rm_actions WHERE action_id = ANY(%s)", earlier_streams(events)
        )
        rows = {aid: (seq, _action_decoder.decode(state)) for aid, seq, state in found}
        for record in events:
            seq, state = rows.get(record.stream_id, (record.position, None))
            rows[record.stream_id] = (seq, ACTION.evolve(state, record.event, record.meta))
        await _ACTIONS.merge(
            conn,
            [
                (
                    aid,
                    s.org_id,
                    s.workspace_id,
                    s.app_id,
                    seq,
                    s.deleted,
                    f"{s.config.name}\n{s.config.description or ''}".lower(),
                    s.next_run_at,
                    _encoder.encode(s),
                )
                for aid, (seq, s) in rows.items()
            ],
            "INSERT INTO rm_actions ({columns}) SELECT {columns} FROM moved ON CONFLICT (action_id) DO UPDATE "
            "SET deleted = EXCLUDED.deleted, search_text = EXCLUDED.search_text, "
            "next_run_at = EXCLUDED.next_run_at, state = EXCLUDED.state",
        )

    async def _apply_runs(self, conn, events: list[Recorded]) -> None:
        found = await rows_for(
            conn, "SELECT run_id, seq, state FROM rm_runs WHERE run_id = ANY(%s)", earlier_streams(events)
        )
        rows = {rid: (seq, _run_decoder.decode(state)) for rid, seq, state in found}
        changes: dict[str, RunChanges] = {}
        for record in events:
            seq, before = rows.get(record.stream_id, (record.position, None))
            state = RUN.evolve(before, record.event, record.meta)
            rows[record.stream_id] = (seq, state)
            if state.action_id not in changes:
                changes[state.action_id] = RunChanges()
            changes[state.action_id].add(record, before, state)
        await _RUNS.merge(
            conn,
            [
                (rid, s.org_id, s.action_id, seq, s.status, s.due_at, s.lease_until, _encoder.encode(s))
                for rid, (seq, s) in rows.items()
            ],
            "INSERT INTO rm_runs ({columns}) SELECT {columns} FROM moved "
            "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, "
            "due_at = EXCLUDED.due_at, lease_until = EXCLUDED.lease_until, state = EXCLUDED.state",
        )
        await _update_counters(conn, changes)


class RunChanges:
    """What a batch of run events does to one action's counters. An action's last_* fields follow its latest
    run (the last one requested): its time and execution id, and its status as it stands after the batch."""

    def __init__(self) -> None:
        self.requested = self.succeeded = self.failed = self.running = 0
        self.last_run_at: datetime | None = None
        self.last_execution_id: str | None = None
        self.statuses: dict[str, str] = {}  # execution id -> status after the batch, of every run it touched

    def add(self, record: Recorded, before: RunState | None, run: RunState) -> None:
        match record.event:
            case RunRequested():
                self.requested += 1
                self.last_run_at, self.last_execution_id = record.meta.occurred_at, run.execution_id
            case RunSucceeded():
                self.succeeded += 1
            case AttemptFailed(retry_at=None):
                self.failed += 1
            case AttemptStarted() | AttemptFailed():
                pass
            case _:
                raise TypeError(record.event)
        was_running = before is not None and before.status == "running"
        self.running += (run.status == "running") - was_running
        self.statuses[run.execution_id] = run.status


async def _update_counters(conn, changes: dict[str, RunChanges]) -> None:
    """One statement for all the batch's actions. An action whose latest run was requested before the batch
    reads that run's execution id first, to take its new status if the batch moved it."""
    latest = {action_id: c.last_execution_id for action_id, c in changes.items()}
    earlier = [action_id for action_id, execution_id in latest.items() if execution_id is None]
    if earlier:
        cursor = await conn.execute(
            "SELECT action_id, last_execution_id FROM rm_actions WHERE action_id = ANY(%s)", (earlier,)
        )
        latest.update(await cursor.fetchall())
    await _COUNTER_CHANGES.merge(
        conn,
        [
            (
                action_id,
                c.requested,
                c.succeeded,
                c.failed,
                c.running,
                c.last_run_at,
                c.last_execution_id,
                c.statuses.get(latest[action_id]) if latest[action_id] else None,
            )
            for action_id, c in changes.items()
        ],
        "UPDATE rm_actions a SET total_runs = a.total_runs + d.requested, "
        "successful_runs = a.successful_runs + d.succeeded, failed_runs = a.failed_runs + d.failed, "
        "running_runs = a.running_runs + d.running, last_run_at = coalesce(d.last_run_at, a.last_run_at), "
        "last_execution_id = coalesce(d.last_execution_id, a.last_execution_id), "
        "last_run_status = coalesce(d.last_run_status, a.last_run_status) FROM moved d WHERE a.action_id = d.action_id",
    )


_COUNTERS = "total_runs, successful_runs, failed_runs, last_run_at, last_run_status, last_execution_id, running_runs"


async def get_action(
    conn: psycopg.AsyncConnection, org_id: str, app_id: str, action_id: str
) -> tuple[ActionState, Counters] | None:
    row = await (
        await conn.execute(
            f"SELECT state, {_COUNTERS} FROM rm_actions WHERE action_id = %s AND org_id = %s AND app_id = %s "
            "AND NOT deleted",
            (action_id, org_id, app_id),
        )
    ).fetchone()
    return (_action_decoder.decode(row[0]), Counters(*row[1:])) if row else None


async def list_actions(
    conn: psycopg.AsyncConnection,
    org_id: str,
    workspace_id: str,
    app_id: str,
    search: str | None,
    after: int | None,
    limit: int,
) -> tuple[int, list[tuple[int, ActionState, Counters]]]:
    where = "org_id = %s AND workspace_id = %s AND app_id = %s AND NOT deleted"
    params: list = [org_id, workspace_id, app_id]
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where += " AND search_text LIKE %s"
        params.append(f"%{escaped}%")
    total, rows = await counted_page(
        conn,
        f"SELECT count(*) FROM rm_actions WHERE {where}",
        params,
        f"SELECT seq, state, {_COUNTERS} FROM rm_actions WHERE {where} AND seq > %s ORDER BY seq LIMIT %s",
        [*params, after or 0, limit + 1],
    )
    return total, [(row[0], _action_decoder.decode(row[1]), Counters(*row[2:])) for row in rows]


async def get_run(conn: psycopg.AsyncConnection, org_id: str, action_id: str, run_id: str) -> RunState | None:
    row = await (
        await conn.execute(
            "SELECT state FROM rm_runs WHERE run_id = %s AND org_id = %s AND action_id = %s",
            (run_id, org_id, action_id),
        )
    ).fetchone()
    return _run_decoder.decode(row[0]) if row else None


async def list_runs(
    conn: psycopg.AsyncConnection, org_id: str, action_id: str, status: str | None, before: int | None, limit: int
) -> tuple[int, list[tuple[int, RunState]]]:
    """Newest first; the cursor is the key of the last run shown."""
    where = "org_id = %s AND action_id = %s" + (" AND status = %s" if status else "")
    params = [org_id, action_id, *([status] if status else [])]
    total, rows = await counted_page(
        conn,
        f"SELECT count(*) FROM rm_runs WHERE {where}",
        params,
        f"SELECT seq, state FROM rm_runs WHERE {where} AND seq < %s ORDER BY seq DESC LIMIT %s",
        [*params, before or 2**62, limit + 1],
    )
    return total, [(seq, _run_decoder.decode(state)) for seq, state in rows]


async def due_actions(conn: psycopg.AsyncConnection, by: datetime) -> list[tuple[str, str, datetime]]:
    """(org id, action id, next_run_at) of the actions whose next slot comes by `by`, soonest first: the
    scheduler's work list. All of them in one query, which the scheduler pages itself: paging in SQL would read
    every row before the page again, for each page."""
    cursor = await conn.execute(
        "SELECT org_id, action_id, next_run_at FROM rm_actions WHERE NOT deleted AND next_run_at <= %s "
        "ORDER BY next_run_at",
        (by,),
    )
    return list(await cursor.fetchall())


async def runnable_runs(
    conn: psycopg.AsyncConnection, now: datetime, limit: int, per_org: int
) -> list[tuple[str, str]]:
    """(org id, run id) of runs due for an attempt, or whose running attempt's lease has expired. Orgs take turns
    (each org's oldest first, then each org's second, ...), and an org gets no more than `per_org` less the
    attempts it has running, so one org's backlog never fills the answer."""
    # One pass over the partial index of pending and running runs: their count, not the table's, is the cost.
    cursor = await conn.execute(
        "SELECT org_id, run_id FROM ("
        " SELECT org_id, run_id, due_at, due, row_number() OVER (PARTITION BY org_id, due ORDER BY due_at) AS turn,"
        " count(*) FILTER (WHERE NOT due) OVER (PARTITION BY org_id) AS held FROM ("
        "  SELECT org_id, run_id, due_at, (status = 'pending' OR lease_until < %(now)s) AS due FROM rm_runs"
        "  WHERE status IN ('pending', 'running') AND (status = 'running' OR due_at <= %(now)s)"
        " ) AS active"
        ") AS ranked WHERE due AND turn + held <= %(per_org)s ORDER BY turn, due_at LIMIT %(limit)s",
        {"now": now, "per_org": per_org, "limit": limit},
    )
    return list(await cursor.fetchall())
