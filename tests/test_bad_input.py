"""Input that PostgreSQL or Python cannot take answers the seeds' 422, on every route of the app.

The walk reads the routes from the app's own OpenAPI schema, so a new route, parameter or body is tried as
soon as it exists: NUL and invalid UTF-8 in every string query parameter, integers past bigint in every integer
one, a forged cursor wherever there is a cursor, a byte that is not ASCII in every declared header, JSON nested
1,000 levels deep (and no JSON at all) in every body.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import assert_422

BIGINT_PAST = str(2**63)
DEEP_JSON = b"[" * 1000 + b"]" * 1000
FORGED_CURSORS = [
    base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for raw in (b"t1:" + b"9" * 30 + b":x", b"t1:1:a\x00b", b"k1:" + b"9" * 30, b"t1:9" + b"9" * 5000 + b":x")
]


@pytest.fixture(scope="module")
def operations(system) -> list[tuple[str, str, dict]]:
    schema = httpx.get(f"{system.url}/schema/openapi.json").json()
    found = [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    ]
    assert len(found) > 40
    return found


@pytest.fixture(scope="module")
def components(system) -> dict:
    return httpx.get(f"{system.url}/schema/openapi.json").json()["components"]["schemas"]


def _url(path: str, org: str) -> str:
    """Ids the path check accepts: the refusals under test come before any lookup of what they name."""
    fixed = {"org_id": org, "action": "read"}  # `action` is a verb of the activity feeds
    return re.sub(r"\{([^}]+)\}", lambda m: fixed.get(m.group(1), f"{m.group(1)}-1"), path)


def _parameters(operation: dict, where: str) -> list[dict]:
    return [p for p in operation.get("parameters", []) if p["in"] == where]


def _types(schema: dict) -> set[str]:
    found = set()
    for option in schema.get("oneOf", [schema]):
        kind = option.get("type")
        found.update(kind if isinstance(kind, list) else [kind])
    return found


def _send(api: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
    # a stream route answers at once when it refuses; if it ever did not, the timeout says so
    return api.request(method, url, timeout=10, **kwargs)


def _check(failures: list, label: str, response: httpx.Response, loc: list) -> None:
    try:
        assert_422(response, loc)
    except AssertionError as error:
        failures.append(f"{label}: {str(error)[:300]}")


def test_nul_and_invalid_utf8_in_every_string_query_and_path_parameter_answer_422(api, org, operations):
    failures: list[str] = []
    tried = 0
    for method, path, operation in operations:
        for parameter in _parameters(operation, "path"):
            name = parameter["name"]
            for raw in ("a%00b", "a%ffb"):
                url = _url(path, org).replace({"org_id": org, "action": "read"}.get(name, f"{name}-1"), raw, 1)
                _check(failures, f"{method} {path} {name}={raw}", _send(api, method, url, json={}), ["path", name])
        for parameter in _parameters(operation, "query"):
            if "string" not in _types(parameter.get("schema", {})):
                continue
            name = parameter["name"]
            for raw in ("a%00b", "%ff", "%ed%a0%80"):  # NUL; not UTF-8; an encoded lone surrogate
                response = _send(api, method, f"{_url(path, org)}?{name}={raw}", json={})
                _check(failures, f"{method} {path}?{name}={raw}", response, ["query", name])
                tried += 1
    assert tried > 100
    assert not failures, "\n".join(failures)


def test_integers_past_bigint_in_every_integer_query_parameter_answer_422(api, org, operations):
    failures: list[str] = []
    for method, path, operation in operations:
        for parameter in _parameters(operation, "query"):
            if "integer" in _types(parameter.get("schema", {})):
                name = parameter["name"]
                for value in (BIGINT_PAST, "9" * 5000):
                    response = _send(api, method, f"{_url(path, org)}?{name}={value}", json={})
                    _check(failures, f"{method} {path}?{name}={value[:30]}", response, ["query", name])
    assert not failures, "\n".join(failures)


def test_a_forged_cursor_answers_422_on_every_route_with_a_cursor(api, org, operations):
    failures: list[str] = []
    routes = 0
    for method, path, operation in operations:
        if not any(p["name"] == "cursor" for p in _parameters(operation, "query")):
            continue
        routes += 1
        for cursor in FORGED_CURSORS:
            response = _send(api, method, _url(path, org), params={"cursor": cursor})
            label = f"{method} {path} cursor={base64.urlsafe_b64decode(cursor + '==')[:20]!r}"
            _check(failures, label, response, ["query", "cursor"])
    assert routes > 20  # every list and every activity feed
    assert not failures, "\n".join(failures)


def test_a_header_value_that_is_not_ascii_answers_422_on_every_declared_header(api, org, operations):
    failures: list[str] = []
    tried = 0
    for method, path, operation in operations:
        for parameter in _parameters(operation, "header"):
            name = parameter["name"]
            if name.lower() == "authorization":
                continue
            response = _send(api, method, _url(path, org), headers={name: b"\xb2"}, json={})
            _check(failures, f"{method} {path} {name}: \\xb2", response, ["header", name.lower()])
            tried += 1
            if "integer" in _types(parameter.get("schema", {})):
                response = _send(api, method, _url(path, org), headers={name: BIGINT_PAST}, json={})
                _check(failures, f"{method} {path} {name}: 2**63", response, ["header", name.lower()])
    assert tried > 20
    assert not failures, "\n".join(failures)


def test_json_nested_too_deep_and_a_missing_body_answer_422_on_every_body_route(api, org, operations):
    failures: list[str] = []
    routes = 0
    for method, path, operation in operations:
        if "requestBody" not in operation:
            continue
        routes += 1
        url = _url(path, org)
        response = _send(api, method, url, content=DEEP_JSON, headers={"Content-Type": "application/json"})
        _check(failures, f"{method} {path} deep", response, ["body"])
        deep_field = b'{"payload": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001
        response = _send(api, method, url, content=deep_field, headers={"Content-Type": "application/json"})
        _check(failures, f"{method} {path} deep field", response, ["body"])
        # a body that may be null (a trigger's) may also be left out
        if "null" not in _types(operation["requestBody"]["content"]["application/json"]["schema"]):
            response = _send(api, method, url)
            _check(failures, f"{method} {path} no body", response, ["body"])
            if response.status_code == 422 and response.json()["detail"][0]["msg"] != "A JSON body is required":
                failures.append(f"{method} {path} no body: {response.text}")
    assert routes > 20
    assert not failures, "\n".join(failures)


def test_nul_anywhere_in_a_body_answers_422_naming_where_on_every_body_route(api, org, operations):
    """PostgreSQL cannot store NUL in text: whatever field a body carries it in (one a route only stores, such as
    an action's unused `thread_id`), it is refused before anything decides on it."""
    failures: list[str] = []
    for method, path, operation in operations:
        if "requestBody" not in operation:
            continue
        url = _url(path, org)
        body = b'{"name": "a\\u0000b", "tags": ["x"], "thread_id": "t\\u0000"}'
        response = _send(api, method, url, content=body, headers={"Content-Type": "application/json"})
        _check(failures, f"{method} {path} NUL in a value", response, ["body", "name"])
        response = _send(api, method, url, content=b'{"k\\u0000": 1}', headers={"Content-Type": "application/json"})
        _check(failures, f"{method} {path} NUL in a key", response, ["body", "k\x00"])
    assert not failures, "\n".join(failures)


def test_an_escaped_backslash_before_u0000_is_not_a_nul(api, org):
    created = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "back\\u0000slash"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "back\\u0000slash"


def test_deep_json_from_a_stranger_is_refused_as_unauthenticated_before_it_is_read(api, org):
    wide = b"[" + b"[]," * 300_000 + b"[]]"
    with httpx.Client(base_url=api.base_url, timeout=10) as anonymous:
        for body in (DEEP_JSON, wide, b'{"name": "\\u0000"}'):
            response = anonymous.post(f"/v1/orgs/{org}/workspaces", content=body)
            assert response.status_code == 401, response.text


def test_every_request_body_refuses_unknown_fields_and_its_schema_says_so(api, org, operations, components):
    failures: list[str] = []
    for method, path, operation in operations:
        if "requestBody" not in operation:
            continue
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        refs = [s["$ref"] for s in schema.get("oneOf", [schema]) if "$ref" in s]
        for ref in refs:
            if components[ref.rsplit("/", 1)[1]].get("additionalProperties") is not False:
                failures.append(f"{method} {path}: {ref} allows additional properties")
        response = _send(api, method, _url(path, org), json={"no_such_field": 1})
        _check(failures, f"{method} {path} unknown field", response, ["body", "no_such_field"])
    assert not failures, "\n".join(failures)


def test_nul_in_text_filters_answers_422_naming_the_filter(api, org):
    workspace = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "filters"}).json()["workspace_id"]
    cases = [
        ("/events", "type"),
        ("/events", "aggregate_id"),
        ("/analytics", "workspace_id"),
        ("/me/activity", "workspace_id"),
        ("/users/someone/activity", "workspace_id"),
        (f"/workspaces/{workspace}/activity/search", "user_id"),
        (f"/workspaces/{workspace}/activity/search", "resource_type"),
    ]
    for path, name in cases:
        body = assert_422(api.get(f"/v1/orgs/{org}{path}", params={name: "a\x00b"}), ["query", name])
        assert body["detail"][0]["input"] == "a\x00b"
    with httpx.Client(base_url=api.base_url, timeout=10) as anonymous:  # who asks comes before what they ask
        assert anonymous.get(f"/v1/orgs/{org}/events?type=a%00b").status_code == 401
        assert anonymous.post(f"/v1/orgs/{org}/workspaces", content=DEEP_JSON).status_code == 401


def test_a_forged_time_cursor_answers_422_on_an_activity_feed(api, org):
    for cursor in FORGED_CURSORS[:2]:
        body = assert_422(api.get(f"/v1/orgs/{org}/activity", params={"cursor": cursor}), ["query", "cursor"])
        assert body["detail"][0]["input"] == cursor


def test_last_event_id_must_be_a_position(api, org):
    stream = f"/v1/orgs/{org}/events/stream"
    assert_422(api.get(stream, headers={"Last-Event-ID": b"\xb2"}), ["header", "last-event-id"])
    body = assert_422(api.get(stream, headers={"Last-Event-ID": "abc"}), ["header", "last-event-id"])
    assert body["detail"][0]["input"] == "abc"
    with httpx.Client(base_url=api.base_url, timeout=10) as anonymous:
        assert anonymous.get(stream, headers={"Last-Event-ID": b"\xb2"}).status_code == 401


def test_a_time_filter_outside_the_utc_range_answers_422(api, org):
    body = assert_422(
        api.get(f"/v1/orgs/{org}/activity", params={"start_time": "9999-12-31T23:59:59-14:00"}),
        ["query", "start_time"],
    )
    assert body["detail"][0]["type"] == "datetime_range"


@pytest.fixture()
def action_app(api, org) -> dict:
    workspace = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "bad input"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{workspace}"
    app_id = api.post(f"{base}/apps", json={"name": "bot"}).json()["app_id"]
    namespace = api.post(f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
    endpoint = api.post(f"{base}/endpoints", json={"app_id": app_id, "name": "echo"}).json()["endpoint_id"]
    return {"actions": f"{base}/apps/{app_id}/actions", "endpoint_id": endpoint, "namespace_id": namespace}


def test_scheduled_at_with_no_utc_time_answers_422_on_create_and_update(api, action_app):
    overflowing = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]
    once = {
        "name": "once",
        "endpoint_id": action_app["endpoint_id"],
        "namespace_id": action_app["namespace_id"],
        "action_type": "scheduled",
        "schedule_type": "once",
    }
    for scheduled_at in overflowing:
        response = api.post(action_app["actions"], json={**once, "scheduled_at": scheduled_at})
        body = assert_422(response, ["body", "scheduled_at"])
        assert body["detail"][0]["input"] == scheduled_at
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = api.post(action_app["actions"], json={**once, "scheduled_at": soon})
    assert created.status_code == 201, created.text
    action = f"{action_app['actions']}/{created.json()['action_id']}"
    for scheduled_at in overflowing:
        assert_422(api.put(action, json={"scheduled_at": scheduled_at}), ["body", "scheduled_at"])
    latest = api.post(action_app["actions"], json={**once, "scheduled_at": "9999-12-30T23:59:59+14:00"})
    assert latest.status_code == 201, latest.text


def test_a_post_without_a_body_says_a_json_body_is_required(api, org):
    body = assert_422(api.post(f"/v1/orgs/{org}/workspaces"), ["body"])
    assert body["detail"] == [
        {"loc": ["body"], "msg": "A JSON body is required", "type": "missing", "input": None, "ctx": {}}
    ]
    with httpx.Client(base_url=api.base_url, timeout=10) as anonymous:
        assert anonymous.post(f"/v1/orgs/{org}/workspaces").status_code == 401


def test_workspaces_refuse_unknown_fields_without_repeating_them(api, org):
    body = assert_422(api.post(f"/v1/orgs/{org}/workspaces", json={"name": "x", "nmae": "typo"}), ["body", "nmae"])
    # an unknown field may hold anything, a secret's value among them: it is named, not repeated
    assert body["detail"][0]["input"] is None and body["detail"][0]["type"] == "extra_forbidden"
    assert body["detail"][0]["msg"] == "Object contains unknown field `nmae`"
    assert_422(api.put(f"/v1/orgs/{org}/workspaces/ws-1", json={"nmae": "typo"}), ["body", "nmae"])


def test_body_errors_echo_the_offending_input(api, org):
    body = assert_422(api.post(f"/v1/orgs/{org}/workspaces", json={"name": 5}), ["body", "name"])
    assert body["detail"][0]["input"] == 5
    assert body["detail"][0]["msg"] == "Expected `str`, got `int`"
    body = assert_422(api.post(f"/v1/orgs/{org}/workspaces", json={"name": "x", "tags": ["a", 3]}), ["body", "tags", 1])
    assert body["detail"][0]["input"] == 3
    body = assert_422(api.post(f"/v1/orgs/{org}/tokens", json={"name": "t", "role": ["owner"]}), ["body", "role"])
    assert body["detail"][0]["input"] == ["owner"]
    missing = assert_422(api.post(f"/v1/orgs/{org}/workspaces", json={"tags": []}), ["body", "name"])
    assert missing["detail"][0]["type"] == "missing" and missing["detail"][0]["input"] is None
