"""The isolation matrix: every endpoint of the OpenAPI schema, against callers who must be refused."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import as_token, assert_envelope, issue_token

WRITES = {"post", "put", "delete"}

ORG = "/v1/orgs/{org_id}"
CATALOG_KINDS = (
    "apps", "releases", "endpoints", "augmentations", "namespaces", "threads", "sources", "secrets", "models",
)  # fmt: skip
CATALOG_OPERATIONS = (("get", ""), ("post", ""), ("get", "/{item_id}"), ("put", "/{item_id}"), ("delete", "/{item_id}"))
# Every operation of the OpenAPI schema under an org, as (method, path under the org); the schema test below
# keeps this list equal to what the API serves.
OPERATIONS = [
    (method, ORG + path)
    for method, path in [
        ("get", "/workspaces"),
        ("post", "/workspaces"),
        ("get", "/workspaces/{workspace_id}"),
        ("put", "/workspaces/{workspace_id}"),
        ("delete", "/workspaces/{workspace_id}"),
        ("get", "/tokens"),
        ("post", "/tokens"),
        ("delete", "/tokens/{token_id}"),
        ("get", "/workspaces/{workspace_id}/environments"),
        ("post", "/workspaces/{workspace_id}/environments"),
        ("get", "/workspaces/{workspace_id}/environments/{environment_id}"),
        ("put", "/workspaces/{workspace_id}/environments/{environment_id}"),
        ("delete", "/workspaces/{workspace_id}/environments/{environment_id}"),
        ("post", "/workspaces/{workspace_id}/environments/{environment_id}/deploy"),
        ("get", "/workspaces/{workspace_id}/environments/{environment_id}/deployments"),
        ("delete", "/workspaces/{workspace_id}/environments/{environment_id}/deploy/{app_id}"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/actions"),
        ("post", "/workspaces/{workspace_id}/apps/{app_id}/actions"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}"),
        ("put", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}"),
        ("delete", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}"),
        ("post", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}/disable"),
        ("post", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}/enable"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}/runs/{run_id}"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}/runs"),
        ("post", "/workspaces/{workspace_id}/apps/{app_id}/actions/{action_id}/trigger"),
        ("get", "/me/activity"),
        ("get", "/me/activity/summary"),
        ("get", "/activity"),
        ("get", "/activity/summary"),
        ("get", "/users/{user_id}/activity"),
        ("get", "/users/{user_id}/activity/summary"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/activity"),
        ("get", "/workspaces/{workspace_id}/augmentations/{augmentation_id}/activity"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/endpoints/{endpoint_id}/activity"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/endpoints/{endpoint_id}/activity/summary"),
        ("get", "/workspaces/{workspace_id}/resources/{resource_id}/activity"),
        ("get", "/workspaces/{workspace_id}/activity/search"),
        ("get", "/workspaces/{workspace_id}/activity/actions/{action}"),
        ("get", "/workspaces/{workspace_id}/activity"),
        ("get", "/workspaces/{workspace_id}/activity/summary"),
        ("get", "/analytics"),
        ("get", "/workspaces/{workspace_id}/analytics/actions"),
        ("get", "/workspaces/{workspace_id}/apps/{app_id}/analytics"),
        ("get", "/workspaces/{workspace_id}/analytics/executions/daily"),
        ("get", "/workspaces/{workspace_id}/analytics/executions"),
        ("get", "/workspaces/{workspace_id}/analytics/executions/hourly"),
        ("get", "/workspaces/{workspace_id}/namespaces/{namespace_id}/analytics"),
        ("get", "/workspaces/{workspace_id}/analytics/resources"),
        ("get", "/workspaces/{workspace_id}/analytics/secrets"),
        ("get", "/workspaces/{workspace_id}/analytics/sources"),
        ("get", "/workspaces/{workspace_id}/analytics"),
        ("get", "/events"),
        ("get", "/events/stream"),
        *(
            (method, f"/workspaces/{{workspace_id}}/{kind}{item}")
            for kind in CATALOG_KINDS
            for method, item in CATALOG_OPERATIONS
        ),
    ]
]


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


def test_the_matrix_covers_every_endpoint_of_the_schema(api):
    served = operations(api)
    assert sorted(OPERATIONS) == sorted(served) and len(served) == len(set(served))
    assert len(served) >= 49  # every endpoint of the reference, and the token and audit ones


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_the_endpoint_refuses_who_it_must(system, callers, method, path):
    org, tokens = callers
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
