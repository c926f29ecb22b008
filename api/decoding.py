"""The one decoding path every request goes through before its handler sees it.

Litestar turns the query string, headers, path and body into handler arguments with rules of its own: invalid
UTF-8 becomes U+FFFD, a NUL stays a NUL, an integer is as large as it is written, JSON is as deep as it comes.
PostgreSQL refuses NUL in text and integers past bigint, each with an exception that would answer 500. This
middleware refuses all of that with the seeds' 422 first, for every route: what the route declares is read from
its handler's signature, so a new route cannot forget it. Cursors carry their own contents and are decoded, with
the same limits, by `projections.pagination`. JSON nested past what msgspec's decoder follows is refused where
the body is decoded (`api.errors`), after authentication: measuring depth here, in Python and before anyone is
authenticated, let any client hold the event loop for a fifth of a second per megabyte.

A refusal answers after the route's own guards and before-request hook (authentication, the org, the
permission), as every other validation error does: a caller without a valid token hears 401, never what was
wrong with its input.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from litestar.constants import RESERVED_KWARGS
from litestar.enums import ParamType
from litestar.params import BodyKwarg, ParameterKwarg

from domain.errors import FieldError, ValidationFailed

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # PostgreSQL bigint
INTEGER = re.compile(r"\s*[+-]?\d+\s*")
# RFC 9110 field values without obs-text: anything else is decoded as Latin-1 by guesswork.
HEADER_VALUE = re.compile(rb"[\t\x20-\x7e]*")
BODY_METHODS = {"POST", "PUT", "PATCH"}


class RouteInputs:
    """What one route handler reads from a request, from its signature."""

    def __init__(self, handler, path_names) -> None:
        self.integers: dict[tuple[str, str], Any] = {}  # (source, name) -> its ParameterKwarg or None
        self.headers: set[bytes] = set()  # as ASGI gives them: lower-case bytes
        self.body_required: bool | None = None  # None: the route takes no body
        dependencies = handler.resolve_dependencies()  # services the app provides (`api.app`), not input
        for name, field in handler.parsed_fn_signature.parameters.items():
            if name in dependencies:
                continue
            kwarg = field.kwarg_definition
            if isinstance(kwarg, BodyKwarg) or name == "data":
                self.body_required = not (field.has_default or field.is_optional)
                continue
            if name in RESERVED_KWARGS or getattr(field, "is_di_field", False):
                continue
            parameter = kwarg if isinstance(kwarg, ParameterKwarg) else None
            source, alias = ParamType.QUERY, name
            if parameter is not None:
                source, alias = parameter.param_type, parameter.name or parameter.query or parameter.header or name
            if name in path_names:
                source = ParamType.PATH
            if source == ParamType.HEADER:
                alias = alias.lower()
                self.headers.add(alias.encode("latin-1"))
            if _is_integer(field):
                self.integers[(str(source.value), alias)] = parameter


def _is_integer(field) -> bool:
    types = [t for t in (field.inner_types if field.is_optional else (field,)) if not t.is_none_type]
    return any(t.is_subclass_of(int) and not t.is_subclass_of(bool) for t in types)


def _text(raw: bytes, form: bool = True) -> str | None:
    """A query-string part (`form`: where '+' is a space) or a path as text, or None if it is not UTF-8 once
    its escapes are undone."""
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ") if form else raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _shown(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def _text_problem(name: str, value: str | None, shown: str) -> FieldError | None:
    if value is None:
        return FieldError((name,), "Input should be valid UTF-8 text", "string_unicode", shown)
    if "\x00" in value:
        return FieldError((name,), "Input must not contain NUL (\\u0000)", "string_pattern_mismatch", value)
    return None


def _integer_problem(name: str, value: str, parameter) -> FieldError | None:
    """Integers that PostgreSQL's bigint cannot hold; the declared bounds, when narrower, speak for themselves."""
    if not INTEGER.fullmatch(value):
        return None  # not an integer at all: Litestar's own validation says so
    digits = value.strip().lstrip("+-").lstrip("0")
    # int() refuses strings of more than 4,300 digits (ValueError); anything past 19 digits is out of range
    number = int(value) if len(digits) <= 19 else (INT64_MIN - 1 if "-" in value else INT64_MAX + 1)
    ge = getattr(parameter, "ge", None)
    le = getattr(parameter, "le", None)
    if number > INT64_MAX and (le is None or le > INT64_MAX):
        return FieldError((name,), f"Input should be at most {INT64_MAX}", "less_than_equal", value, {"le": INT64_MAX})
    if number < INT64_MIN and (ge is None or ge < INT64_MIN):
        return FieldError(
            (name,), f"Input should be at least {INT64_MIN}", "greater_than_equal", value, {"ge": INT64_MIN}
        )
    return None


def nul_location(value: Any, path: tuple = ()) -> tuple | None:
    """Where a decoded JSON value holds a NUL, in a string or a key, if anywhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return (*path, key)
            if (found := nul_location(item, (*path, key))) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_location(item, (*path, index))) is not None:
                return found
    return None


class DecodingMiddleware:
    """Litestar runs an instance in front of each route handler, after routing (`scope["route_handler"]`)."""

    def __init__(self, app) -> None:
        self.app = app
        self.inputs: RouteInputs | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            try:
                await self.refuse_undecodable(scope, receive)
            except Exception:
                await _guards_first(scope, receive, send)
                raise
        await self.app(scope, receive, send)

    async def refuse_undecodable(self, scope, receive) -> None:
        inputs = self.inputs
        if inputs is None:  # a route's path parameters are those of its every request
            inputs = self.inputs = RouteInputs(scope["route_handler"], set(scope.get("path_params") or ()))
        _check_path(scope, inputs)
        _check_query(scope, inputs)
        if inputs.headers:
            _check_headers(scope, inputs)
        if inputs.body_required is not None and scope["method"] in BODY_METHODS:
            await _check_body(scope, receive, inputs)


def _check_path(scope, inputs: RouteInputs) -> None:
    params = scope.get("path_params") or {}
    raw_path = scope.get("raw_path") or b""
    # The server undid the path's escapes, turning bytes that are not UTF-8 into U+FFFD.
    undecodable = b"%" in raw_path and _text(raw_path, form=False) is None
    errors = []
    for name, value in params.items():
        if not isinstance(value, str):
            continue
        if undecodable and "\ufffd" in value:
            errors.append(_text_problem(name, None, value))
        elif "\x00" in value:
            errors.append(_text_problem(name, value, value))
        elif ("path", name) in inputs.integers:
            errors.append(_integer_problem(name, value, inputs.integers[("path", name)]))
    _refuse(errors, "path")


def _check_query(scope, inputs: RouteInputs) -> None:
    query = scope.get("query_string") or b""
    if not query:
        return
    plain = query.isascii() and b"%" not in query and b"\x00" not in query
    integers = [name for source, name in inputs.integers if source == "query"]
    if plain and not integers:
        return
    errors = []
    for part in query.split(b"&"):
        raw_name, _, raw_value = part.partition(b"=")
        if not part:
            continue
        name = _text(raw_name)
        if name is None or "\x00" in name:
            errors.append(
                FieldError((_shown(raw_name),), "Parameter names must be UTF-8 text without NUL", "string_unicode")
            )
            continue
        value = _text(raw_value)
        errors.append(_text_problem(name, value, _shown(raw_value)))
        if value is not None and name in integers:
            errors.append(_integer_problem(name, value, inputs.integers[("query", name)]))
    _refuse(errors, "query")


def _check_headers(scope, inputs: RouteInputs) -> None:
    errors = []
    for raw_name, raw_value in scope.get("headers", []):
        if raw_name not in inputs.headers:
            continue
        name = raw_name.decode("latin-1")
        if not HEADER_VALUE.fullmatch(raw_value):
            errors.append(
                FieldError(
                    (name,),
                    "Header values must be printable ASCII",
                    "string_pattern_mismatch",
                    raw_value.decode("latin-1"),
                )
            )
        elif ("header", name) in inputs.integers:
            errors.append(_integer_problem(name, raw_value.decode("ascii"), inputs.integers[("header", name)]))
    _refuse(errors, "header")


async def _check_body(scope, receive, inputs: RouteInputs) -> None:
    handler = scope["route_handler"]
    # Read through Litestar's own request: the body (and its size limit, 413) is kept in the scope for the
    # handler's request, so it is read once.
    body = await handler.resolve_request_class()(scope, receive).body()
    if not body.strip():
        if inputs.body_required:
            raise ValidationFailed([FieldError((), "A JSON body is required", "missing")])
        return
    if b"\\u0000" in body:  # rare: only then is the body decoded here, once the caller is known
        await _guards_first(scope, receive, None)
        try:
            location = nul_location(msgspec.json.decode(body))
        except (msgspec.DecodeError, RecursionError):
            return  # the handler's decoding says what is wrong with it
        if location is not None:
            raise ValidationFailed(
                [FieldError(location, "Text must not contain NUL (\\u0000)", "string_pattern_mismatch")]
            )


def _refuse(errors: list[FieldError | None], source: str) -> None:
    found = [e for e in errors if e is not None]
    if found:
        raise ValidationFailed(found, source=source)


async def _guards_first(scope, receive, send) -> None:
    """What the route would have done before decoding its arguments: its guards and before-request hook, whose
    refusals (401, 403, a malformed id in the path) come before any about the input."""
    state = scope.setdefault("state", {})
    if state.get("mm.guards_run"):
        return
    state["mm.guards_run"] = True
    handler = scope["route_handler"]
    request = handler.resolve_request_class()(scope, receive, send)
    if handler.resolve_guards():
        await handler.authorize_connection(connection=request)
    if hook := handler.resolve_before_request():
        await hook(request)
