"""Making activity records: one per request under /v1/orgs/ made with a token of its org, or the root token,
success or failure alike (`ActivityMiddleware`), and one per execution attempt (`execution_record`).

An ASGI middleware around the whole app: it gives the request its trace id (from a W3C
`traceparent`, else new; echoed as `X-Trace-Id`), times it, and hands a record to the activity
publisher: after the answer for most requests, which never waits; before the answer's first byte for a
mutating request that succeeded, which waits until the record is durable, so that a crash after the answer
cannot lose the record of a change. Records carry who called (never the token itself, nor any header),
what was touched and how it went.

Only requests authenticated for the org in their path are recorded there: anyone could otherwise write
records of their choosing into any org's feeds. The others are counted (`mm_activity_unrecorded_total`, in
/metrics) and logged. Every request is counted and timed there too (the `RequestMetrics` it is given).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from activity.publisher import ActivityPublisher
from activity.records import ActivityRecord, new_id
from domain.events import ORG_ID, trace_id_from
from domain.run import AttemptOutcome, RunState


class RequestMetrics(Protocol):
    def request(self, method: str, status: int, seconds: float) -> None: ...

    def unrecorded(self, reason: str) -> None: ...


log = logging.getLogger(__name__)

ORG_PATH = re.compile(r"/v1/orgs/([^/]+)(?:/(.*))?")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SINGULAR = {
    "workspaces": "workspace",
    "apps": "app",
    "actions": "action",
    "runs": "run",
    "environments": "environment",
    "deployments": "deployment",
    "deploy": "deployment",
    "tokens": "token",
    "users": "user",
    "me": "user",
    "activity": "activity",
    "resources": "resource",
    "analytics": "analytics",
    "events": "event",
    "releases": "release",
    "endpoints": "endpoint",
    "augmentations": "augmentation",
    "namespaces": "namespace",
    "threads": "thread",
    "sources": "source",
    "secrets": "secret",
    "models": "model",
}
# Path segments that name the verb of a POST; the verbs are the API reference's six (`activity.records.ACTIONS`),
# so a deploy is the create of a deployment (and an undeploy, a DELETE, its delete).
VERBS = {"trigger": "trigger", "deploy": "create", "enable": "update", "disable": "update"}
ERRORS = {
    401: "AUTHENTICATION_FAILED",
    403: "FORBIDDEN",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_SERVER_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def traceparent_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    return next((value.decode("latin-1") for name, value in headers if name == b"traceparent"), None)


def classify(method: str, rest: str) -> dict[str, Any]:
    """What a path under /v1/orgs/{org}/ touches: ids on the way, the resource, and the verb."""
    segments = [s for s in rest.split("/") if s]
    found: dict[str, Any] = {"resource_type": "org", "resource_id": None}
    i = 0
    while i < len(segments):
        collection = segments[i]
        item = segments[i + 1] if i + 1 < len(segments) else None
        kind = SINGULAR.get(collection)
        if kind is None:  # an action verb (trigger, enable) or a sub-path (summary, search)
            i += 1
            continue
        if collection == "activity" and item == "actions":  # /activity/actions/{verb}: a feed, not ids
            found.update(resource_type="activity", resource_id=None)
            break
        found["resource_type"], found["resource_id"] = kind, None
        if item is not None and item not in SINGULAR and item not in VERBS and item not in ("summary", "search"):
            found["resource_id"] = item
            if kind in ("workspace", "app", "augmentation"):
                found[f"{kind}_id"] = item
            i += 2
        else:
            i += 1
    last = segments[-1] if segments else ""
    if method == "GET":
        found["action"] = "read"
    elif method == "POST":
        found["action"] = VERBS.get(last, "create")
    elif method in ("PUT", "PATCH"):
        found["action"] = "update"
    elif method == "DELETE":
        found["action"] = "delete"
    else:  # HEAD, OPTIONS or a method no route takes (405): nothing changed
        found["action"] = "read"
    return found


class ActivityMiddleware:
    def __init__(self, app, publisher: ActivityPublisher | None, metrics: RequestMetrics) -> None:
        self.app = app
        self.publisher = publisher  # None: recording off
        self.metrics = metrics  # counts and times every request, and counts those left unrecorded

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        trace_id = trace_id_from(traceparent_of(scope.get("headers", [])))
        state["trace_id"] = trace_id
        match = ORG_PATH.fullmatch(scope["path"])
        if match and not ORG_ID.fullmatch(match.group(1)):
            match = None
        started = time.perf_counter()
        status = {"code": 500}
        recorded = False

        async def send_with_trace(message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-trace-id", trace_id.encode())]}
                if match and scope["method"] in MUTATING and status["code"] < 400:
                    publisher = self.publisher
                    if publisher is not None and self._attributed(scope, state, match):
                        recorded = True
                        await publisher.record_durably(self._record(scope, state, match, status["code"], started))
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            self.metrics.request(scope["method"], status["code"], time.perf_counter() - started)
            if match and not recorded:
                if self._attributed(scope, state, match, status["code"]):
                    publisher = self.publisher
                    if publisher is not None:
                        publisher.record(self._record(scope, state, match, status["code"], started))

    def _attributed(self, scope, state, match, status_code: int | None = None) -> bool:
        """Whether the request was authenticated for the org in its path. When `status_code` is given (the
        request is over) one that was not is counted and logged, without its credentials."""
        principal = state.get("principal")
        if principal is not None and (principal.org_id is None or principal.org_id == match.group(1)):
            return True
        if status_code is not None:
            reason = "unauthenticated" if principal is None else "other_org"
            self.metrics.unrecorded(reason)
            client = scope.get("client") or ("unknown", 0)
            # Anyone can send these, so they are not worth a line each unless a real token was misused.
            log.log(
                logging.DEBUG if principal is None else logging.INFO,
                "not recorded (%s): %s %r -> %d from %s%s",
                reason,
                scope["method"],
                scope["path"][:200],
                status_code,
                client[0],
                f" by token {principal.actor.token_id} of org {principal.org_id}" if principal is not None else "",
            )
        return False

    def _record(self, scope, state, match, status_code: int, started: float) -> ActivityRecord:
        org_id, rest = match.group(1), match.group(2) or ""
        found = classify(scope["method"], rest)
        principal = state.get("principal")
        actor = principal.actor if principal is not None else None
        headers = dict(scope.get("headers", []))
        metadata = {
            "query": scope.get("query_string", b"").decode("latin-1")[:2000],
            "user_agent": headers.get(b"user-agent", b"").decode("latin-1")[:500],
        }
        return ActivityRecord(
            id=new_id(),
            org_id=org_id,
            timestamp=datetime.now(UTC),
            trace_id=state["trace_id"],
            action=found["action"],
            status_code=status_code,
            success=status_code < 400,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            user_id=actor.user_id or actor.principal_id if actor else None,
            workspace_id=found.get("workspace_id"),
            app_id=found.get("app_id"),
            principal_type=actor.principal_type if actor else None,
            principal_id=actor.principal_id if actor else None,
            token_id=actor.token_id if actor else None,
            token_type=("root" if actor.principal_type == "root" else "api_token") if actor else None,
            method=scope["method"],
            path=scope["path"][:1000],
            resource_type=found["resource_type"],
            resource_id=found["resource_id"],
            error_code=state.get("error_code") or ERRORS.get(status_code) if status_code >= 400 else None,
            augmentation_id=found.get("augmentation_id"),
            metadata=metadata,
        )


def execution_record(run: RunState, outcome: AttemptOutcome, trace_id: str, duration_ms: float) -> ActivityRecord:
    """Each attempt is activity too, so endpoint feeds and token totals are real."""
    return ActivityRecord(
        id=new_id(),
        org_id=run.org_id,
        timestamp=datetime.now(UTC),
        trace_id=trace_id,
        action="execute",
        status_code=200 if outcome.succeeded else 500,
        success=outcome.succeeded,
        duration_ms=duration_ms,
        workspace_id=run.workspace_id,
        app_id=run.app_id,
        principal_type="system",
        principal_id="executor",
        resource_type="endpoint",
        resource_id=run.endpoint_id,
        error_code=outcome.error_code,
        execution_id=run.execution_id,
        stages_completed=outcome.stages_completed,
        total_stages=outcome.total_stages,
        token_usage=outcome.token_usage,
        metadata={"run_id": run.run_id, "action_id": run.action_id, "attempt": run.attempt},
    )
