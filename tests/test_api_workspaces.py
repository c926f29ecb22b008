"""Workspaces through HTTP, against the real pipeline (PostgreSQL -> relay -> NATS -> projector)."""

from __future__ import annotations

import threading

import httpx

from tests.conftest import assert_422, assert_envelope, position_of
from tests.support import eventually

WORKSPACE_KEYS = {
    "workspace_id",
    "name",
    "description",
    "owner_id",
    "subscription_plan_id",
    "is_active",
    "tags",
    "region",
    "s3_bucket",
    "bucket_status",
    "created_at",
    "updated_at",
}


def test_create_answers_the_seed_shape_with_its_position(api, org):
    response = api.post(
        f"/v1/orgs/{org}/workspaces",
        json={"organization_id": org, "name": "alpha", "tags": ["prod"], "region": "eu-west-1"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == WORKSPACE_KEYS
    assert (body["name"], body["region"], body["tags"], body["bucket_status"]) == (
        "alpha",
        "eu-west-1",
        ["prod"],
        "pending",
    )
    assert body["created_at"].endswith("Z") and int(position_of(response)) > 0


def test_read_your_write_with_min_position(api, org):
    created = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "alpha"})
    workspace_id = created.json()["workspace_id"]
    got = api.get(f"/v1/orgs/{org}/workspaces/{workspace_id}", headers={"X-Min-Position": position_of(created)})
    assert got.status_code == 200 and got.json()["name"] == "alpha"


def test_min_position_beyond_the_log_is_422(api, org):
    assert_422(
        api.get(f"/v1/orgs/{org}/workspaces", headers={"X-Min-Position": str(10**12)}), ["header", "x-min-position"]
    )


def test_min_position_not_reached_in_time_answers_503(api, org, settings):
    import psycopg

    first = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "first"})
    api.get(f"/v1/orgs/{org}/workspaces", headers={"X-Min-Position": position_of(first)})  # the row exists now
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        # Hold the view's position row, as a stuck projector would, so the new event cannot be applied.
        conn.execute("SELECT position FROM mm_positions WHERE name = 'workspaces' FOR UPDATE")
        created = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "late"})
        response = api.get(f"/v1/orgs/{org}/workspaces", headers={"X-Min-Position": position_of(created)})
    body = assert_envelope(response, 503, "PROJECTION_NOT_CAUGHT_UP")
    assert body["details"]["required_position"] == int(position_of(created))
    assert response.headers["Retry-After"] == "1"


def test_update_then_delete(api, org):
    workspace_id = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "alpha"}).json()["workspace_id"]
    updated = api.put(f"/v1/orgs/{org}/workspaces/{workspace_id}", json={"description": "d", "is_active": False})
    assert updated.status_code == 200 and updated.json()["description"] == "d" and not updated.json()["is_active"]
    got = api.get(f"/v1/orgs/{org}/workspaces/{workspace_id}", headers={"X-Min-Position": position_of(updated)})
    assert got.json()["description"] == "d" and got.json()["name"] == "alpha"

    deleted = api.delete(f"/v1/orgs/{org}/workspaces/{workspace_id}")
    assert deleted.status_code == 200 and deleted.json() == {"message": "Workspace deleted successfully"}
    after = {"X-Min-Position": position_of(deleted)}
    assert_envelope(api.get(f"/v1/orgs/{org}/workspaces/{workspace_id}", headers=after), 404, "RESOURCE_NOT_FOUND")
    assert api.get(f"/v1/orgs/{org}/workspaces", headers=after).json()["total"] == 0
    for response in (
        api.put(f"/v1/orgs/{org}/workspaces/{workspace_id}", json={"name": "x"}),
        api.delete(f"/v1/orgs/{org}/workspaces/{workspace_id}"),
    ):
        body = assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
        assert body["details"] == {"resource_type": "workspace", "resource_id": workspace_id}


def test_another_orgs_workspace_is_not_found(api, org):
    workspace_id = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "alpha"}).json()["workspace_id"]
    assert_envelope(api.get(f"/v1/orgs/other-{org}/workspaces/{workspace_id}"), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(api.put(f"/v1/orgs/other-{org}/workspaces/{workspace_id}", json={}), 404, "RESOURCE_NOT_FOUND")


def test_paging_120_workspaces_by_50_shows_each_exactly_once(api, org):
    created = [api.post(f"/v1/orgs/{org}/workspaces", json={"name": f"w{i}"}) for i in range(120)]
    wait = {"X-Min-Position": position_of(created[-1])}
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/v1/orgs/{org}/workspaces", params=params, headers=wait).json()
        assert page["total"] == 120
        seen += [w["workspace_id"] for w in page["workspaces"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert sorted(seen) == sorted(r.json()["workspace_id"] for r in created) and len(set(seen)) == 120


def test_bucket_becomes_ready(api, org):
    workspace_id = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "alpha"}).json()["workspace_id"]
    body = eventually(
        lambda: api.get(f"/v1/orgs/{org}/workspaces/{workspace_id}").json(),
        until=lambda body: body.get("bucket_status") == "ready",
        what="the bucket to become ready",
    )
    assert body["s3_bucket"] == "mm-" + workspace_id.replace("_", "-")


def test_concurrent_updates_of_one_workspace_are_all_kept(api, org):
    workspace_id = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "alpha"}).json()["workspace_id"]
    answers = []

    def tag(i: int) -> None:
        answers.append(api.put(f"/v1/orgs/{org}/workspaces/{workspace_id}", json={"description": f"d{i}"}))

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
    kept = [a for a in answers if a.status_code == 200]
    positions = {position_of(a) for a in kept}
    assert len(positions) == len(kept)  # each accepted update is its own event: none overwrote another
    last = max(kept, key=lambda a: int(position_of(a)))
    final = api.get(f"/v1/orgs/{org}/workspaces/{workspace_id}", headers={"X-Min-Position": position_of(last)})
    assert final.json()["description"] == last.json()["description"]


def test_validation_failures_answer_the_seed_422_shape(api, org):
    base = f"/v1/orgs/{org}/workspaces"
    assert_422(api.post(base, json={"name": ""}), ["body", "name"])
    assert_422(api.post(base, json={"name": "n" * 101}), ["body", "name"])
    assert_422(api.post(base, json={"name": 5}), ["body", "name"])
    assert_422(api.post(base, json={}), ["body", "name"])
    assert_422(api.post(base, json={"name": "a", "region": "mars-1"}), ["body", "region"])
    assert_422(api.post(base, json={"name": "a", "tags": ["t"] * 21}), ["body", "tags"])
    assert_422(api.post(base, json={"name": "a", "organization_id": "someone-else"}), ["body", "organization_id"])
    assert_422(api.post(base, content=b'{"name": ', headers={"content-type": "application/json"}), ["body"])
    assert_422(api.get(base, params={"limit": 0}), ["query", "limit"])
    assert_422(api.get(base, params={"limit": 201}), ["query", "limit"])
    assert_422(api.get(base, params={"cursor": "not-a-cursor"}), ["query", "cursor"])
    assert_422(api.get(base, params={"organization_id": "someone-else"}), ["query", "organization_id"])
    assert_422(api.get(base, headers={"X-Min-Position": "soon"}), ["header", "x-min-position"])
    assert_422(api.get("/v1/orgs/bad%20org/workspaces"), ["path", "org_id"])


def test_unknown_route_and_method_answer_the_envelope(api):
    assert_envelope(api.get("/v1/nothing-here"), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(api.patch("/v1/orgs/acme/workspaces"), 405, "METHOD_NOT_ALLOWED")


def test_openapi_schema_and_health(api):
    schema = api.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/v1/orgs/{org_id}/workspaces" in schema.json()["paths"]
    assert api.get("/schema").status_code == 200
    assert api.get("/healthz").json() == {"status": "ok", "checks": {}, "consumers": {}}
    ready = api.get("/readyz").json()
    assert ready["checks"] == {"postgres": "ok", "nats": "ok"}
    assert {"relay", "workspaces", "analytics"} <= set(ready["consumers"])
    with httpx.Client(base_url=api.base_url, timeout=10) as stranger:  # the verdict, not the pipeline's state
        anonymous = stranger.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json()["consumers"] == {}
        assert anonymous.json()["checks"] == {"postgres": "ok", "nats": "ok"}
    metrics = api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'mm_consumer_lag_events{consumer="workspaces"}' in text and "mm_commands_total" in text
    assert 'mm_http_requests_total{method="GET",status="200"}' in text


def test_ids_of_the_wrong_kind_or_shape_are_404_or_422_never_500(api, org):
    workspace_id = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "alpha"}).json()["workspace_id"]
    token_id = api.post(f"/v1/orgs/{org}/tokens", json={"name": "t", "role": "viewer"}).json()["token_id"]
    assert_envelope(api.delete(f"/v1/orgs/{org}/tokens/{workspace_id}"), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(api.put(f"/v1/orgs/{org}/workspaces/{token_id}", json={"name": "x"}), 404, "RESOURCE_NOT_FOUND")
    assert_422(api.get(f"/v1/orgs/{org}/workspaces/a%00b"), ["path", "workspace_id"])
    assert_422(api.put(f"/v1/orgs/{org}/workspaces/a%00b", json={}), ["path", "workspace_id"])
    assert_422(
        api.post(f"/v1/orgs/{org}/workspaces", json={"name": "n", "description": "d" * 2001}), ["body", "description"]
    )
