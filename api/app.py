"""The Litestar application."""

from __future__ import annotations

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin  # the cached schema it serves; no public accessor
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.actions import ActionController
from api.activity import OrgActivityController, WorkspaceActivityController
from api.analytics import OrgAnalyticsController, WorkspaceAnalyticsController
from api.audit import AuditController
from api.catalog import CATALOG_CONTROLLERS
from api.decoding import DecodingMiddleware
from api.environments import EnvironmentController
from api.errors import EXCEPTION_HANDLERS
from api.health import healthz, metrics, readyz
from api.schemas import ErrorBody, StrictStructSchemaPlugin, ValidationErrorBody
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
        middleware=[DecodingMiddleware],
        plugins=[StrictStructSchemaPlugin()],
        openapi_config=openapi,
        request_max_body_size=system.settings.max_body_bytes,
        debug=False,
    )
    app.state.system = system
    document_errors(app)
    return app


ERRORS = {
    "401": "Missing or invalid token",
    "403": "The token may not do this (`details.required_permission`)",
    "404": "Not found (`details.resource_type`, `details.resource_id`)",
    "409": "Conflict with the current state",
    "413": "Body too large",
    "429": "Rate limit exceeded (see `Retry-After`)",
    "500": "Unexpected error",
    "503": "A backing service is unavailable, or a view has not reached `X-Min-Position` in time",
}


def document_errors(app: Litestar) -> None:
    """Adds the error answers every `/v1/orgs` operation can give, with their bodies, to the OpenAPI schema."""
    schema = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    (error_schema, validation_schema), components = msgspec.json.schema_components(
        [ErrorBody, ValidationErrorBody], ref_template="#/components/schemas/{name}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/v1/orgs/"):
            continue
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("400", None)  # bad input answers 422, never 400
            responses.setdefault(
                "422",
                {
                    "description": "Invalid input (body, query, path or header)",
                    "content": {"application/json": {"schema": validation_schema}},
                },
            )
            for status, description in ERRORS.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": error_schema}}}
                )
