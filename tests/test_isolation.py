"""The isolation matrix: every endpoint of the OpenAPI schema, against callers who must be refused."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import as_token, assert_envelope, issue_token

WRITES = {"post", "put", "delete"}


def operations(api) -> list[tuple[str, str]]:
    schema = api.get("/schema/openapi.json").json()
    return [
        (method, path)
        for path, item in schema["paths"].items()
        if path.startswith("/v1/orgs/{org_id}")
        for method in item
        if method in ("get", "post", "put", "delete")
    ]


def concrete(path: str, org: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: org if m.group(1) == "org_id" else f"x_{m.group(1)}", path)


@pytest.fixture(scope="module")
def callers(system):
    org, other = "iso-org", "iso-other"
    with httpx.Client(
        base_url=system.url, headers={"Authorization": "Bearer " + system.settings.root_token}, timeout=30
    ) as root:
        tokens = {role: issue_token(root, org, role) for role in ("viewer", "member")}
        tokens["other"] = issue_token(root, other, "owner")
        revoked = issue_token(root, org, "owner")
        assert root.delete(f"/v1/orgs/{org}/tokens/{revoked.split('.')[0]}").status_code == 200
        tokens["revoked"] = revoked
    return org, tokens


def test_every_endpoint_refuses_who_it_must(api, system, callers):
    org, tokens = callers
    checked = 0
    for method, path in operations(api):
        url = concrete(path, org)
        body = {} if method in ("post", "put") else None
        for label, headers in (
            ("none", {}),
            ("malformed", {"Authorization": "Bearer not-a-token"}),
            ("revoked", {"Authorization": f"Bearer {tokens['revoked']}"}),
        ):
            response = httpx.request(method, system.url + url, headers=headers, json=body, timeout=30)
            assert response.status_code == 401, (label, method, path)
            assert_envelope(response, 401, "AUTHENTICATION_FAILED")
        with as_token(system, tokens["other"]) as other:
            response = other.request(method, url, json=body)
            refused = assert_envelope(response, 403, "FORBIDDEN")
            assert "iso-org" not in response.text.replace(url, "") and refused["details"]["required_permission"]
        if method in WRITES:
            with as_token(system, tokens["viewer"]) as viewer:
                assert_envelope(viewer.request(method, url, json=body), 403, "FORBIDDEN")
        if "/tokens" in path:
            with as_token(system, tokens["member"]) as member:
                assert_envelope(member.request(method, url, json=body), 403, "FORBIDDEN")
        checked += 1
    assert checked >= 49  # every endpoint of the reference, and the token and audit ones


def test_no_token_or_authorization_header_is_ever_stored_or_logged(api, system, settings, caplog):
    import logging

    import psycopg

    caplog.set_level(logging.DEBUG)
    org = "iso-secrets"
    token = issue_token(api, org, "owner", user_id="sam")
    secret = token.split(".", 1)[1]
    with as_token(system, token) as sam:
        ws = sam.post(f"/v1/orgs/{org}/workspaces", json={"name": "w"}).json()["workspace_id"]
        sam.get(f"/v1/orgs/{org}/workspaces/{ws}")
        sam.get(f"/v1/orgs/{org}/workspaces/nope")
        sam.post(f"/v1/orgs/{org}/workspaces", json={"name": ""})
    httpx.get(f"{system.url}/v1/orgs/{org}/workspaces", headers={"Authorization": f"Bearer {token}x"})
    with psycopg.connect(settings.database_url) as conn:
        for table, column in (("stored_events", "state"), ("activity", "record")):
            found = conn.execute(
                f"SELECT count(*) FROM {table} WHERE position(%s in convert_from({column}, 'UTF8')) > 0", (secret,)
            ).fetchone()[0]
            assert found == 0, table
        assert (
            conn.execute(
                "SELECT count(*) FROM activity WHERE position('Bearer' in convert_from(record, 'UTF8')) > 0"
            ).fetchone()[0]
            == 0
        )
    assert secret not in caplog.text and "Bearer" not in caplog.text
