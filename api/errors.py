"""Every failure becomes the seeds' error envelope (or their 422 `detail` list), here and nowhere else."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState

from api.limits import RateLimited, retry_after_header
from api.schemas.errors import ErrorBody, ValidationErrorBody, ValidationErrorItem
from domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from eventstore import CommitterStopped
from projections.read_your_writes import NotCaughtUp

log = logging.getLogger(__name__)

# msgspec names the offending field in its message when the body object itself is at fault.
FIELD_IN_MESSAGE = re.compile(r"(missing required|contains unknown) field `([^`]+)`")
BODY_KEY = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


class Unauthorized(Exception):
    pass


class Unavailable(Exception):
    def __init__(self, error: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.details = details


def envelope(
    status: int, error: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    timestamp = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    body = ErrorBody(error=error, message=message, details=details or {}, timestamp=timestamp, status_code=status)
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def unprocessable(items: list[ValidationErrorItem]) -> Response[ValidationErrorBody]:
    return Response(ValidationErrorBody(detail=items), status_code=422, media_type=MediaType.JSON)


def _validation_failed(_: Request, exc: ValidationFailed) -> Response:
    return unprocessable(
        [
            ValidationErrorItem(loc=[exc.source, *e.field], msg=e.msg, type=e.type, input=e.input, ctx=e.ctx)
            for e in exc.errors
        ]
    )


def _framework_validation(request: Request, exc: ValidationException) -> Response:
    """Litestar's own decoding errors (body types, malformed JSON, query and header parameters)."""
    items = []
    for extra in exc.extra if isinstance(exc.extra, list) else []:
        source = extra.get("source") or "body"
        source = str(getattr(source, "value", source))
        key = extra.get("key")
        message = str(extra.get("message") or exc.detail)
        if source == "body":
            path = _body_path(key)
            named = FIELD_IN_MESSAGE.search(message)
            if named:
                path.append(named.group(2))
            # A field the body does not know is not repeated: what it holds is unknown, perhaps a secret's value
            # (which the catalog refuses and never shows).
            shown = None if named and named.group(1) == "contains unknown" else _body_value(request, path)
            items.append(ValidationErrorItem(loc=["body", *path], msg=message, type=_error_type(message), input=shown))
            continue
        if source == "header" and key:
            key = _header_name(request, str(key))
        loc: list[str | int] = [source, *_location(source, key)]
        items.append(
            ValidationErrorItem(loc=loc, msg=message, type=_error_type(message), input=_input_of(request, source, key))
        )
    if not items:  # e.g. a body that is not JSON at all
        message = str(exc.detail)
        items.append(ValidationErrorItem(loc=["body"], msg=message, type="json_invalid"))
    return unprocessable(items)


def _header_name(request: Request, argument: str) -> str:
    """Litestar names a header by the handler's argument (`min_position`); the client knows `x-min-position`."""
    field = request.route_handler.parsed_fn_signature.parameters.get(argument)
    name = getattr(field.kwarg_definition, "name", None) if field is not None else None
    return (name or argument).lower()


def _location(source: str, key: Any) -> list[str]:
    if not key:
        return []
    if source == "header":
        return [str(key)]
    return str(key).split(".")


def _body_path(key: Any) -> list[str | int]:
    """Litestar's key of a body error (`name`, `tags[0]`; `data`, the body itself) as a location."""
    if key is None or key == "data":
        return []
    return [int(index) if index else name for index, name in BODY_KEY.findall(str(key)) if index or name]


def _body_value(request: Request, path: list[str | int]) -> Any:
    """The offending value, from the JSON that Litestar decoded (and kept in the scope) before validating it."""
    value = ScopeState.from_scope(request.scope).json
    if value is Empty:
        return None
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _input_of(request: Request, source: str, key: Any) -> Any:
    if source == "query" and key:
        return request.query_params.get(str(key))
    if source == "path" and key:
        return request.path_params.get(str(key))
    if source == "header" and key:
        return request.headers.get(str(key))
    return None


def _error_type(message: str) -> str:
    lowered = message.lower()
    if "missing required" in lowered or "object missing" in lowered:
        return "missing"
    if "unknown field" in lowered:
        return "extra_forbidden"
    if "json is malformed" in lowered or "malformed" in lowered:
        return "json_invalid"
    if ">=" in lowered:
        return "greater_than_equal"
    if "<=" in lowered:
        return "less_than_equal"
    if "expected `" in lowered:
        return "type_error"
    return "value_error"


def _http_exception(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status == 404:
        return envelope(
            404,
            "RESOURCE_NOT_FOUND",
            "The requested resource was not found",
            {"resource_type": "route", "resource_id": _.url.path},
        )
    if status == 405:
        return envelope(
            405,
            "METHOD_NOT_ALLOWED",
            "The method is not allowed for this resource",
            {"method": _.method},
            headers=exc.headers,
        )
    if status == 413:
        return envelope(413, "PAYLOAD_TOO_LARGE", "The request body is too large")
    if status == 400:  # Litestar's answer to a body it could not decode
        return unprocessable([ValidationErrorItem(loc=["body"], msg=str(exc.detail), type="json_invalid")])
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
        return envelope(500, "INTERNAL_SERVER_ERROR", "An unexpected error occurred")
    return envelope(status, "HTTP_ERROR", str(exc.detail))


def _unavailable(_: Request, exc: Exception) -> Response:
    if isinstance(exc, Unavailable):
        return envelope(503, exc.error, exc.message, exc.details, headers={"Retry-After": "1"})
    log.warning("storage unavailable: %s: %s", type(exc).__name__, exc)
    return envelope(
        503, "SERVICE_UNAVAILABLE", "A backing service is unavailable; retry shortly", headers={"Retry-After": "1"}
    )


def _not_caught_up(_: Request, exc: NotCaughtUp) -> Response:
    return envelope(
        503,
        "PROJECTION_NOT_CAUGHT_UP",
        str(exc),
        {"required_position": exc.position, "positions": exc.reached},
        headers={"Retry-After": "1"},
    )


def _recursion(request: Request, exc: RecursionError) -> Response:
    """msgspec's decoder refuses JSON nested past Python's recursion limit with a RecursionError of its own,
    raised while the body is decoded (after authentication): bad input, not a fault."""
    if "while deserializing" in str(exc):
        return unprocessable(
            [ValidationErrorItem(loc=["body"], msg="The JSON body is nested too deeply", type="json_invalid")]
        )
    return _internal(request, exc)


def _internal(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return envelope(500, "INTERNAL_SERVER_ERROR", "An unexpected error occurred")


_HANDLERS: dict[Any, Any] = {
    Unauthorized: lambda _, exc: envelope(401, "AUTHENTICATION_FAILED", "Authentication required"),
    RateLimited: lambda _, exc: envelope(
        429,
        "RATE_LIMITED",
        "Too many requests; slow down",
        {"retry_after_seconds": round(exc.retry_after, 3)},
        headers={"Retry-After": retry_after_header(exc)},
    ),
    Forbidden: lambda _, exc: envelope(
        403, "FORBIDDEN", "You don't have permission to perform this action", {"required_permission": exc.permission}
    ),
    NotFound: lambda _, exc: envelope(
        404,
        "RESOURCE_NOT_FOUND",
        "The requested resource was not found",
        {"resource_type": exc.resource_type, "resource_id": exc.resource_id},
    ),
    Conflict: lambda _, exc: envelope(409, "CONFLICT", exc.message, exc.details),
    ValidationFailed: _validation_failed,
    ValidationException: _framework_validation,
    UnicodeDecodeError: lambda _, exc: unprocessable(
        [ValidationErrorItem(loc=["body"], msg="The body is not valid UTF-8", type="string_unicode")]
    ),
    HTTPException: _http_exception,
    Unavailable: _unavailable,
    NotCaughtUp: _not_caught_up,
    CommitterStopped: _unavailable,
    psycopg.OperationalError: _unavailable,
    psycopg_pool.PoolTimeout: _unavailable,
    StoreOperationalError: _unavailable,
    StoreInterfaceError: _unavailable,
    RecursionError: _recursion,
    Exception: _internal,
}


def _remembering(handler):
    """Notes the answer's error code where the activity middleware will find it."""

    def answer(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        body = response.content
        code = (
            body.error if isinstance(body, ErrorBody) else "VALIDATION_ERROR" if response.status_code == 422 else None
        )
        if code:
            request.scope.setdefault("state", {})["error_code"] = code
        return response

    return answer


EXCEPTION_HANDLERS = {exc: _remembering(handler) for exc, handler in _HANDLERS.items()}
