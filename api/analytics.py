"""Analytics: endpoints 39-49, served from the analytics rollups."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from api.common import MinPosition, PathId, Views
from api.schemas.analytics import (
    ActionAnalytics,
    AppAnalytics,
    ExecutionMetrics,
    NamespaceAnalytics,
    OrgAnalytics,
    OrgWorkspaceRollup,
    ResourceCounts,
    SecretAnalytics,
    Series,
    SeriesPoint,
    SourceAnalytics,
    WorkspaceAnalytics,
)
from domain.catalog import KINDS
from domain.errors import NotFound
from projections import analytics, workspaces
from projections.stored import stored_item

VIEWS = [analytics.NAME, workspaces.NAME]


async def _values(
    views: Views, org_id: str, workspace_id: str, min_position: int | None, of: tuple[str, str] | None = None
) -> dict[str, int]:
    """The workspace's counters; `of` (kind, id) names a catalog item of it that must exist (404 otherwise)."""
    await views.wait_for(VIEWS, min_position)
    async with views.connection() as conn:
        await views.require_workspace(conn, org_id, workspace_id, min_position)
        if of is not None and await analytics.catalog_item(conn, org_id, workspace_id, *of) is None:
            # Not counted yet is not unknown: one just created is in the event store (and counts nothing yet).
            if await stored_item(conn, views.codec, org_id, workspace_id, *of) is None:
                raise NotFound(KINDS[of[0]].resource, of[1])
        return (await analytics.counters(conn, [workspace_id]))[workspace_id]


class OrgAnalyticsController(Controller):
    path = "/v1/orgs/{org_id:str}/analytics"
    tags = ["Analytics"]

    @get("/", opt={"permission": "workspace:read"}, summary="Get org analytics rollup")
    async def org_rollup(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: Annotated[str | None, QueryParameter(max_length=128)] = None,
        min_position: MinPosition = None,
    ) -> OrgAnalytics:
        """Totals over the org's workspaces (or the one named by `workspace_id`), and each workspace's own."""
        await views.wait_for(VIEWS, min_position)
        async with views.connection() as conn:
            if workspace_id:
                await views.require_workspace(conn, org_id, workspace_id, min_position)
            found = await analytics.workspaces_of(conn, org_id, workspace_id)
            values = await analytics.counters(conn, [ws for ws, _, _ in found])
        totals: Counter[str] = Counter()
        rollups = []
        for ws, name, _ in found:
            totals.update(values[ws])
            rollups.append(
                OrgWorkspaceRollup(
                    workspace_id=ws,
                    name=name,
                    resources=ResourceCounts(**analytics.resources(values[ws])),
                    executions=ExecutionMetrics(**analytics.executions(values[ws])),
                )
            )
        return OrgAnalytics(
            org_id=org_id,
            workspace_count=len(found),
            resources=ResourceCounts(**analytics.resources(totals)),
            executions=ExecutionMetrics(**analytics.executions(totals)),
            workspaces=rollups,
            updated_at=max((at for _, _, at in found), default=None),
        )


class WorkspaceAnalyticsController(Controller):
    path = "/v1/orgs/{org_id:str}/workspaces/{workspace_id:str}"
    tags = ["Analytics"]
    opt = {"permission": "workspace:read"}

    @get("/analytics", summary="Get workspace analytics summary")
    async def summary(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> WorkspaceAnalytics:
        values = await _values(views, org_id, workspace_id, min_position)
        async with views.connection() as conn:
            found = await analytics.workspaces_of(conn, org_id, workspace_id)
        return WorkspaceAnalytics(
            workspace_id=workspace_id,
            resources=ResourceCounts(**analytics.resources(values)),
            executions=ExecutionMetrics(**analytics.executions(values)),
            updated_at=found[0][2] if found else None,
        )

    @get("/analytics/resources", summary="Get resource counts")
    async def resources(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> ResourceCounts:
        return ResourceCounts(**analytics.resources(await _values(views, org_id, workspace_id, min_position)))

    @get("/analytics/executions", summary="Get execution metrics")
    async def executions(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> ExecutionMetrics:
        return ExecutionMetrics(**analytics.executions(await _values(views, org_id, workspace_id, min_position)))

    @get("/analytics/executions/hourly", summary="Get hourly execution data")
    async def hourly(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        hours: Annotated[int, QueryParameter(ge=1, le=168, description="Number of hours")] = 24,
        min_position: MinPosition = None,
    ) -> Series:
        return await self._series(views, org_id, workspace_id, "hour", hours, min_position)

    @get("/analytics/executions/daily", summary="Get daily execution data")
    async def daily(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        days: Annotated[int, QueryParameter(ge=1, le=90, description="Number of days")] = 30,
        min_position: MinPosition = None,
    ) -> Series:
        return await self._series(views, org_id, workspace_id, "day", days, min_position)

    @staticmethod
    async def _series(
        views: Views, org_id: str, workspace_id: str, period: str, count: int, min_position: int | None
    ) -> Series:
        await _values(views, org_id, workspace_id, min_position)
        async with views.connection() as conn:
            points = await analytics.series(conn, workspace_id, period, count, datetime.now(UTC))
        return Series(
            metric="executions",
            period="hourly" if period == "hour" else "daily",
            data=[SeriesPoint(timestamp=at, value=value) for at, value in points],
        )

    @get("/apps/{app_id:str}/analytics", summary="Get app analytics")
    async def app(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        app_id: PathId,
        min_position: MinPosition = None,
    ) -> AppAnalytics:
        values = await _values(views, org_id, workspace_id, min_position, of=("apps", app_id))
        return AppAnalytics(
            app_id=app_id,
            **{k: values.get(f"app:{app_id}.{k}", 0) for k in ("augmentations", "namespaces", "endpoints", "releases")},
        )

    @get("/namespaces/{namespace_id:str}/analytics", summary="Get namespace analytics")
    async def namespace(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        workspace_id: PathId,
        namespace_id: PathId,
        min_position: MinPosition = None,
    ) -> NamespaceAnalytics:
        values = await _values(views, org_id, workspace_id, min_position, of=("namespaces", namespace_id))
        return NamespaceAnalytics(
            namespace_id=namespace_id,
            threads=values.get(f"namespace:{namespace_id}.threads", 0),
            sources=values.get(f"namespace:{namespace_id}.sources", 0),
        )

    @get("/analytics/actions", summary="Get action analytics")
    async def actions(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> ActionAnalytics:
        v = await _values(views, org_id, workspace_id, min_position)
        return ActionAnalytics(
            total_actions=v.get("actions.total", 0),
            enabled_actions=v.get("actions.enabled", 0),
            trigger_actions=v.get("actions.trigger", 0),
            scheduled_actions=v.get("actions.scheduled", 0),
        )

    @get("/analytics/secrets", summary="Get secret analytics")
    async def secrets(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> SecretAnalytics:
        v = await _values(views, org_id, workspace_id, min_position)
        return SecretAnalytics(
            total_secrets=v.get("secrets.total", 0),
            active_secrets=v.get("secrets.active", 0),
            secrets_by_type=analytics.prefixed(v, "secrets.type."),
        )

    @get("/analytics/sources", summary="Get source analytics")
    async def sources(
        self, views: NamedDependency[Views], org_id: PathId, workspace_id: PathId, min_position: MinPosition = None
    ) -> SourceAnalytics:
        v = await _values(views, org_id, workspace_id, min_position)
        return SourceAnalytics(
            total_sources=v.get("sources.total", 0),
            indexed_sources=v.get("sources.status.indexed", 0),
            failed_sources=v.get("sources.status.failed", 0),
            pending_sources=v.get("sources.status.pending", 0),
            total_chunks=v.get("sources.chunks", 0),
            total_tokens=v.get("sources.tokens", 0),
            total_bytes=v.get("sources.bytes", 0),
            workspace_sources=v.get("sources.workspace", 0),
            namespace_sources=v.get("sources.namespace", 0),
            sources_by_type=analytics.prefixed(v, "sources.type."),
            sources_by_status=analytics.prefixed(v, "sources.status."),
        )
