"""The Litestar application."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.actions import ActionController
from api.activity import OrgActivityController, WorkspaceActivityController
from api.analytics import OrgAnalyticsController, WorkspaceAnalyticsController
from api.audit import AuditController
from api.catalog import CATALOG_CONTROLLERS
from api.environments import EnvironmentController
from api.errors import EXCEPTION_HANDLERS
from api.health import healthz, metrics, readyz
from api.tokens import TokenController
from api.workspaces import WorkspaceController


def create_app(system) -> Litestar:
    openapi = OpenAPIConfig(
        title="MechaMental API",
        version="1.0.0",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="Root or org API token")
            }
        ),
        security=[{"bearer": []}],
    )
    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics,
            WorkspaceController,
            TokenController,
            EnvironmentController,
            *CATALOG_CONTROLLERS,
            ActionController,
            OrgActivityController,
            WorkspaceActivityController,
            OrgAnalyticsController,
            WorkspaceAnalyticsController,
            AuditController,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        request_max_body_size=system.settings.max_body_bytes,
        debug=False,
    )
    app.state.system = system
    return app
