"""The Litestar application: the routes, and the services their handlers receive by name through Litestar's
dependency injection (`dependencies`), each provider handing every request the one instance `build` made.

A handler asks for one service where it can: Litestar resolves two or more dependencies of a handler in an
anyio task group, which costs more CPU per request than a cached GET workspace costs altogether (BENCHMARKS.md,
"Appendix: why the code is the way it is")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar, Router
from litestar._openapi.plugin import OpenAPIPlugin  # the cached schema it serves; no public accessor
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.actions import ActionController
from api.activity import OrgActivityController, WorkspaceActivityController
from api.analytics import OrgAnalyticsController, WorkspaceAnalyticsController
from api.audit import AuditController
from api.auth import Authorizer
from api.catalog import CATALOG_CONTROLLERS
from api.common import Views
from api.decoding import DecodingMiddleware
from api.environments import EnvironmentController
from api.errors import EXCEPTION_HANDLERS
from api.health import Backends, healthz, metrics, readyz
from api.schemas.common import StrictStructSchemaPlugin
from api.schemas.errors import ErrorBody, ValidationErrorBody
from api.tokens import TokenController
from api.workspaces import WorkspaceController

if TYPE_CHECKING:
    from mechamental.bootstrap import Services

ORG_CONTROLLERS = [
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
]


def provided(value: Any) -> Provide:
    """The same instance for every request, handed out without a thread or a coroutine."""
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def create_app(services: Services) -> Litestar:
    settings = services.settings
    authorizer = Authorizer(services.token_verifier, services.limiter, settings.root_token, settings.metrics_token)

    async def before_request(connection) -> None:
        # A function, not the bound method: Litestar deep-copies a router as it registers it, and a function
        # is copied as itself, where a method would copy its instance (the token cache and its lock with it).
        await authorizer.authorize(connection)

    dependencies = {
        "commands": provided(services.commands),
        "views": provided(
            Views(services.pool, services.read_your_writes, services.workspace_cache, services.store.codec)
        ),
        "token_verifier": provided(services.token_verifier),
        "authorizer": provided(authorizer),
        "backends": provided(Backends(services.pool, services.nats.current, services.consumers)),
        "metrics": provided(services.metrics),
    }
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
            # Every /v1/orgs route authenticates and checks its permission first (`api.auth`).
            Router(path="/", route_handlers=ORG_CONTROLLERS, before_request=before_request),
        ],
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DecodingMiddleware],
        plugins=[StrictStructSchemaPlugin()],
        openapi_config=openapi,
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )
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
