"""Analytics rollups, kept from catalog, action, run and workspace events; never counted per request.

Each catalog item and action contributes counters (`resources.apps`, `app:<id>.releases`,
`sources.status.indexed`, ...) that follow from its state alone. An event moves the counters by
contributions(new state) - contributions(old state), so creates, changes (a source's status, a
secret's type) and deletes are all the same arithmetic. Executions count once, at their final
outcome, into totals and into hourly and daily series.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg

from domain.action import ACTION, ActionState
from domain.catalog import CATALOG, KINDS, CatalogItem
from domain.events import Recorded
from domain.run import AttemptFailed, RunRequested, RunSucceeded
from domain.workspace import WorkspaceCreated, WorkspaceDeleted, WorkspaceUpdated
from projections.batches import Staging, earlier_streams, rows_for

NAME = "analytics"


RESOURCE_KINDS = (
    "sources",
    "augmentations",
    "endpoints",
    "namespaces",
    "apps",
    "threads",
    "actions",
    "secrets",
    "models",
)
_ITEMS = Staging("rm_analytics_items", {"stream_id": "text", "kind": "text", "state": "bytea"})
_COUNTERS = Staging("rm_analytics_counters", {"workspace_id": "text", "key": "text", "value": "numeric"})
_THREADS = Staging("rm_analytics_threads", {"workspace_id": "text", "thread_id": "text"})
_NAMESPACE_THREADS = Staging(
    "rm_analytics_namespace_threads", {"namespace_id": "text", "thread_id": "text", "workspace_id": "text"}
)
_SERIES = Staging(
    "rm_analytics_series", {"workspace_id": "text", "period": "text", "bucket": "timestamptz", "value": "int8"}
)
_TOUCHED = Staging("analytics_touched", {"workspace_id": "text", "at": "timestamptz"})
_decoders = {"catalog": msgspec.json.Decoder(CatalogItem), "action": msgspec.json.Decoder(ActionState)}
_encoder = msgspec.json.Encoder()


def contributions(state: Any) -> Counter[str]:
    """The counters one live catalog item or action adds to its workspace."""
    out: Counter[str] = Counter()
    if state is None or state.deleted:
        return out
    if isinstance(state, ActionState):
        c = state.config
        out.update(
            {
                "resources.actions": 1,
                "actions.total": 1,
                "actions.enabled": int(c.is_enabled),
                "actions.trigger": int(c.action_type == "trigger"),
                "actions.scheduled": int(c.action_type == "scheduled"),
            }
        )
        return out
    f = state.fields
    out[f"resources.{state.kind}"] += 1
    if state.kind in ("augmentations", "endpoints", "releases") or (state.kind == "namespaces" and f.get("app_id")):
        if f.get("app_id"):
            out[f"app:{f['app_id']}.{state.kind}"] += 1
    if state.kind in ("threads", "sources") and f.get("namespace_id"):
        out[f"namespace:{f['namespace_id']}.{state.kind}"] += 1
    if state.kind == "secrets":
        out.update(
            {
                "secrets.total": 1,
                "secrets.active": int(bool(f.get("is_active"))),
                f"secrets.type.{f.get('type') or 'unknown'}": 1,
            }
        )
    if state.kind == "sources":
        out.update(
            {
                "sources.total": 1,
                f"sources.status.{f.get('status') or 'pending'}": 1,
                "sources.chunks": f.get("chunks") or 0,
                "sources.tokens": f.get("tokens") or 0,
                "sources.bytes": f.get("bytes") or 0,
                f"sources.type.{f.get('type') or 'unknown'}": 1,
                "sources.namespace" if f.get("namespace_id") else "sources.workspace": 1,
            }
        )
    return out


def outcome_of(event: Any) -> str | None:
    """A run event's final outcome, if it is the run's last event."""
    if type(event) is RunSucceeded:
        return "success"
    if type(event) is AttemptFailed and event.retry_at is None:
        return "failed"
    return None


class Analytics:
    name = NAME

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        relevant, entities, runs = [], [], []
        for record in batch:
            aggregate = record.aggregate
            if aggregate == "run":
                runs.append(record)
            elif aggregate in ("catalog", "action"):
                entities.append(record)
            elif aggregate != "workspace":
                continue
            relevant.append(record)
        if not relevant:
            return
        # A run's namespace is its action's: the actions of the batch's runs are read with the batch's entities
        # (but not written back unless the batch changes them).
        changing = set(earlier_streams(entities))
        started = [r for r in runs if type(r.event) is RunRequested and r.event.resolved_thread_id]
        found = await rows_for(
            conn,
            "SELECT stream_id, kind, state FROM rm_analytics_items WHERE stream_id = ANY(%s)",
            list({*changing, *(r.event.action_id for r in started)}),
        )
        known = {stream_id: _decoders[kind].decode(state) for stream_id, kind, state in found}
        items = {stream_id: state for stream_id, state in known.items() if stream_id in changing}
        run_workspaces = await self._run_workspaces(conn, runs)
        deltas: defaultdict[str, Counter[str]] = defaultdict(Counter)
        touched: dict[str, datetime] = {}
        series: Counter[tuple[str, str, datetime]] = Counter()
        workspaces: list[tuple] = []
        threads: list[tuple[str, str]] = []
        namespace_threads: list[tuple[str, str, str]] = []
        for record in relevant:  # in log order; runs are most of them, so they come first and by exact type
            event, at, aggregate = record.event, record.meta.occurred_at, record.aggregate
            if aggregate == "run":
                workspace_id = run_workspaces.get(record.stream_id)
                if workspace_id is None:
                    continue
                outcome = outcome_of(event)
                if type(event) is RunRequested and event.resolved_thread_id:
                    threads.append((workspace_id, event.resolved_thread_id))
                    action = items.get(event.action_id) or known.get(event.action_id)
                    if isinstance(action, ActionState):
                        namespace_threads.append(
                            (action.config.namespace_id, event.resolved_thread_id, workspace_id)
                        )
                if outcome:
                    change = deltas[workspace_id]
                    change["executions.total"] += 1
                    change[f"executions.{outcome}"] += 1
                    hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                    series[(workspace_id, "hour", hour)] += 1
                    series[(workspace_id, "day", hour.replace(hour=0))] += 1
                touched[workspace_id] = at
            elif aggregate == "workspace":
                if isinstance(event, WorkspaceCreated | WorkspaceUpdated | WorkspaceDeleted):
                    name = getattr(event, "name", None)
                    name = name if isinstance(name, str) else None  # an update may leave it unset
                    workspaces.append(
                        (record.stream_id, record.meta.org_id, name, isinstance(event, WorkspaceDeleted), at)
                    )
            else:
                kind = CATALOG if aggregate == "catalog" else ACTION
                before = items.get(record.stream_id)
                after = kind.evolve(before, event, record.meta)
                items[record.stream_id] = after
                change = deltas[after.workspace_id]
                change.update(contributions(after))
                change.subtract(contributions(before))
                touched[after.workspace_id] = at
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO rm_analytics_workspaces (workspace_id, org_id, name, deleted, updated_at) "
                "VALUES (%s, %s, coalesce(%s, ''), %s, %s) ON CONFLICT (workspace_id) DO UPDATE SET "
                "name = coalesce(%s, rm_analytics_workspaces.name), deleted = EXCLUDED.deleted, "
                "updated_at = EXCLUDED.updated_at",
                [
                    (workspace_id, org_id, name, deleted, at, name)
                    for workspace_id, org_id, name, deleted, at in workspaces
                ],
            )
            for workspace_id in await self._new_run_threads(conn, threads):
                deltas[workspace_id]["resources.threads"] += 1
            for namespace_id, workspace_id in await self._new_namespace_threads(conn, namespace_threads):
                deltas[workspace_id][f"namespace:{namespace_id}.threads"] += 1
            await _COUNTERS.merge(
                conn,
                [(ws, key, value) for ws, change in deltas.items() for key, value in change.items() if value],
                "INSERT INTO rm_analytics_counters AS c ({columns}) SELECT {columns} FROM moved "
                "ON CONFLICT (workspace_id, key) DO UPDATE SET value = c.value + EXCLUDED.value",
            )
            # A counter back at zero is removed, so the table is the same however the events were batched.
            if deltas:
                await cur.execute(
                    "DELETE FROM rm_analytics_counters WHERE workspace_id = ANY(%s) AND value = 0", (list(deltas),)
                )
            await _SERIES.merge(
                conn,
                [(*key, value) for key, value in series.items()],
                "INSERT INTO rm_analytics_series AS s ({columns}) SELECT {columns} FROM moved "
                "ON CONFLICT (workspace_id, period, bucket) DO UPDATE SET value = s.value + EXCLUDED.value",
            )
            await _TOUCHED.merge(
                conn,
                list(touched.items()),
                "UPDATE rm_analytics_workspaces w SET updated_at = greatest(w.updated_at, t.at) FROM moved t "
                "WHERE w.workspace_id = t.workspace_id",
            )
            await _ITEMS.merge(
                conn,
                [
                    (stream_id, "action" if isinstance(state, ActionState) else "catalog", _encoder.encode(state))
                    for stream_id, state in items.items()
                ],
                "INSERT INTO rm_analytics_items ({columns}) SELECT {columns} FROM moved "
                "ON CONFLICT (stream_id) DO UPDATE SET state = EXCLUDED.state",
            )

    async def _run_workspaces(self, conn, events: list[Recorded]) -> dict[str, str]:
        """Run id -> its workspace, for the batch's run events. Only a run's first event names its workspace, so
        a run still open at the end of a batch keeps a row (kind 'run') until its final event removes it: a row
        per open run rather than per run ever, and none for a run that starts and ends in one batch, as nearly
        all do in a replay."""
        requested = {r.stream_id: r.event.workspace_id for r in events if type(r.event) is RunRequested}
        finished = {r.stream_id for r in events if outcome_of(r.event)}
        workspaces = dict(requested)
        earlier = list({r.stream_id for r in events} - requested.keys())
        if earlier:
            cursor = await conn.execute(
                # The snapshot the SELECT reads is the one before the DELETE: it still sees the closed runs.
                "WITH closed AS (DELETE FROM rm_analytics_items WHERE kind = 'run' AND stream_id = ANY(%s)) "
                "SELECT stream_id, state FROM rm_analytics_items WHERE kind = 'run' AND stream_id = ANY(%s)",
                ([run_id for run_id in earlier if run_id in finished], earlier),
            )
            workspaces.update({stream_id: bytes(state).decode() for stream_id, state in await cursor.fetchall()})
        await _ITEMS.merge(
            conn,
            [(run_id, "run", ws.encode()) for run_id, ws in requested.items() if run_id not in finished],
            "INSERT INTO rm_analytics_items ({columns}) SELECT {columns} FROM moved ON CONFLICT DO NOTHING",
        )
        return workspaces

    @staticmethod
    async def _new_run_threads(conn, threads: list[tuple[str, str]]) -> list[str]:
        """Records the threads runs started; returns, for each one first seen in its workspace that is not a
        catalog thread (already counted as one), that workspace."""
        counted = await _THREADS.merge(
            conn,
            list(dict.fromkeys(threads)),
            # Continues the WITH clause that names the staged rows `moved`.
            ", new AS (INSERT INTO rm_analytics_threads ({columns}) SELECT {columns} FROM moved "
            "ON CONFLICT DO NOTHING RETURNING workspace_id, thread_id) "
            "SELECT workspace_id FROM new WHERE NOT EXISTS "
            "(SELECT 1 FROM rm_analytics_items i WHERE i.stream_id = new.thread_id AND i.kind = 'catalog')",
        )
        return [workspace_id for (workspace_id,) in counted]


    @staticmethod
    async def _new_namespace_threads(conn, threads: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """The same for namespaces: (namespace, workspace) for each thread first seen in a namespace that is not a
        catalog thread."""
        counted = await _NAMESPACE_THREADS.merge(
            conn,
            list({(ns, thread): (ns, thread, ws) for ns, thread, ws in threads}.values()),
            ", new AS (INSERT INTO rm_analytics_namespace_threads (namespace_id, thread_id) "
            "SELECT namespace_id, thread_id FROM moved ON CONFLICT DO NOTHING RETURNING namespace_id, thread_id) "
            "SELECT new.namespace_id, moved.workspace_id FROM new JOIN moved USING (namespace_id, thread_id) "
            "WHERE NOT EXISTS "
            "(SELECT 1 FROM rm_analytics_items i WHERE i.stream_id = new.thread_id AND i.kind = 'catalog')",
        )
        return [(namespace_id, workspace_id) for namespace_id, workspace_id in counted]


async def catalog_item(
    conn: psycopg.AsyncConnection, org_id: str, workspace_id: str, kind: str, item_id: str
) -> CatalogItem | None:
    """A live catalog item as this view knows it (so an answer about it waits for the same position)."""
    row = await (
        await conn.execute(
            "SELECT state FROM rm_analytics_items WHERE stream_id = %s AND kind = 'catalog'", (item_id,)
        )
    ).fetchone()
    item = _decoders["catalog"].decode(row[0]) if row else None
    if item is None or item.deleted or (item.org_id, item.workspace_id, item.kind) != (org_id, workspace_id, kind):
        return None
    return item


async def counters(conn: psycopg.AsyncConnection, workspace_ids: list[str]) -> dict[str, dict[str, int]]:
    cursor = await conn.execute(
        "SELECT workspace_id, key, value FROM rm_analytics_counters WHERE workspace_id = ANY(%s)", (workspace_ids,)
    )
    found: dict[str, dict[str, int]] = {ws: {} for ws in workspace_ids}
    for workspace_id, key, value in await cursor.fetchall():
        found[workspace_id][key] = int(value)  # numeric arrives as a Decimal
    return found


async def workspaces_of(
    conn: psycopg.AsyncConnection, org_id: str, workspace_id: str | None
) -> list[tuple[str, str, datetime]]:
    """(id, name, updated_at) of the org's live workspaces, or of the one asked for."""
    sql = "SELECT workspace_id, name, updated_at FROM rm_analytics_workspaces WHERE org_id = %s AND NOT deleted"
    params: list = [org_id]
    if workspace_id:
        sql += " AND workspace_id = %s"
        params.append(workspace_id)
    return list(await (await conn.execute(sql + " ORDER BY workspace_id", params)).fetchall())


async def series(
    conn: psycopg.AsyncConnection, workspace_id: str, period: str, count: int, now: datetime
) -> list[tuple[datetime, int]]:
    """`count` buckets ending with the current one, oldest first, zero-filled."""
    step = timedelta(hours=1) if period == "hour" else timedelta(days=1)
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if period == "day":
        last = last.replace(hour=0)
    first = last - step * (count - 1)
    cursor = await conn.execute(
        "SELECT bucket, value FROM rm_analytics_series WHERE workspace_id = %s AND period = %s AND bucket >= %s",
        (workspace_id, period, first),
    )
    values = {bucket: value for bucket, value in await cursor.fetchall()}
    return [(first + step * i, values.get(first + step * i, 0)) for i in range(count)]


def resources(values: dict[str, int]) -> dict[str, int]:
    return {kind: values.get(f"resources.{kind}", 0) for kind in RESOURCE_KINDS}


def executions(values: dict[str, int]) -> dict[str, Any]:
    total, success = values.get("executions.total", 0), values.get("executions.success", 0)
    return {
        "total": total,
        "success": success,
        "failed": values.get("executions.failed", 0),
        "success_rate": round(success * 100 / total, 2) if total else 0.0,
    }


def prefixed(values: dict[str, int], prefix: str) -> dict[str, int]:
    return {key.removeprefix(prefix): value for key, value in values.items() if key.startswith(prefix) and value}


assert set(RESOURCE_KINDS) - {"actions"} <= set(KINDS)
