"""The catalog through HTTP: one mechanism, nine kinds, their parents and their rules."""

from __future__ import annotations

import pytest

from tests.conftest import assert_422, assert_envelope, position_of


@pytest.fixture()
def workspace(api, org) -> str:
    return api.post(f"/v1/orgs/{org}/workspaces", json={"name": "catalog"}).json()["workspace_id"]


def add(api, org, workspace, kind, **fields):
    response = api.post(f"/v1/orgs/{org}/workspaces/{workspace}/{kind}", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def test_every_kind_round_trips(api, org, workspace):
    app = add(api, org, workspace, "apps", name="assistant", description="helps")
    namespace = add(api, org, workspace, "namespaces", name="docs", app_id=app["app_id"])
    created = {
        "apps": app,
        "releases": add(api, org, workspace, "releases", app_id=app["app_id"], version="1.0.0", notes="first"),
        "endpoints": add(
            api,
            org,
            workspace,
            "endpoints",
            app_id=app["app_id"],
            name="chat",
            url="http://127.0.0.1:9/run",
            total_stages=3,
        ),
        "augmentations": add(api, org, workspace, "augmentations", app_id=app["app_id"], name="rag", type="retrieval"),
        "namespaces": namespace,
        "threads": add(api, org, workspace, "threads", namespace_id=namespace["namespace_id"], title="hello"),
        "sources": add(
            api,
            org,
            workspace,
            "sources",
            name="manual",
            type="pdf",
            namespace_id=namespace["namespace_id"],
            chunks=10,
            tokens=2000,
            bytes=4096,
        ),
        "secrets": add(api, org, workspace, "secrets", name="OPENAI_KEY", type="api_key"),
        "models": add(api, org, workspace, "models", name="gpt", provider="openai"),
    }
    assert created["sources"]["status"] == "pending" and created["secrets"]["is_active"] is True
    assert created["endpoints"]["total_stages"] == 3
    for kind, item in created.items():
        id_field = next(k for k in item if k.endswith("_id") and k != "workspace_id" and item[k].startswith(k[:-3]))
        got = api.get(f"/v1/orgs/{org}/workspaces/{workspace}/{kind}/{item[id_field]}")
        assert got.status_code == 200 or got.status_code == 404  # views may lag without X-Min-Position
        listed = api.get(f"/v1/orgs/{org}/workspaces/{workspace}/{kind}", headers={"X-Min-Position": "0"}).json()
        assert set(listed) == {"total", "has_more", "next_cursor", kind}


def test_get_list_update_delete_an_item(api, org, workspace):
    app = api.post(f"/v1/orgs/{org}/workspaces/{workspace}/apps", json={"name": "a"})
    app_id = app.json()["app_id"]
    got = api.get(f"/v1/orgs/{org}/workspaces/{workspace}/apps/{app_id}", headers={"X-Min-Position": position_of(app)})
    assert got.json()["name"] == "a"
    changed = api.put(f"/v1/orgs/{org}/workspaces/{workspace}/apps/{app_id}", json={"description": "d"})
    assert changed.status_code == 200 and changed.json()["description"] == "d" and changed.json()["name"] == "a"
    listed = api.get(f"/v1/orgs/{org}/workspaces/{workspace}/apps", headers={"X-Min-Position": position_of(changed)})
    assert listed.json()["total"] == 1 and listed.json()["apps"][0]["description"] == "d"
    removed = api.delete(f"/v1/orgs/{org}/workspaces/{workspace}/apps/{app_id}")
    assert removed.status_code == 200
    gone = api.get(
        f"/v1/orgs/{org}/workspaces/{workspace}/apps/{app_id}", headers={"X-Min-Position": position_of(removed)}
    )
    assert_envelope(gone, 404, "RESOURCE_NOT_FOUND")


def test_missing_parents_are_404_naming_them(api, org, workspace):
    body = assert_envelope(
        api.post(f"/v1/orgs/{org}/workspaces/{workspace}/releases", json={"app_id": "app_nope", "version": "1"}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert body["details"] == {"resource_type": "app", "resource_id": "app_nope"}
    body = assert_envelope(
        api.post(f"/v1/orgs/{org}/workspaces/{workspace}/threads", json={"namespace_id": "namespace_nope"}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert body["details"]["resource_type"] == "namespace"
    body = assert_envelope(
        api.post(f"/v1/orgs/{org}/workspaces/ws_nope/apps", json={"name": "a"}), 404, "RESOURCE_NOT_FOUND"
    )
    assert body["details"] == {"resource_type": "workspace", "resource_id": "ws_nope"}


def test_a_parent_from_another_workspace_is_not_found(api, org, workspace):
    other = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "other"}).json()["workspace_id"]
    app_id = add(api, org, other, "apps", name="a")["app_id"]
    assert_envelope(
        api.post(f"/v1/orgs/{org}/workspaces/{workspace}/releases", json={"app_id": app_id, "version": "1"}),
        404,
        "RESOURCE_NOT_FOUND",
    )


def test_release_version_is_unique_per_app(api, org, workspace):
    first = add(api, org, workspace, "apps", name="a")["app_id"]
    second = add(api, org, workspace, "apps", name="b")["app_id"]
    add(api, org, workspace, "releases", app_id=first, version="1.0")
    body = assert_envelope(
        api.post(f"/v1/orgs/{org}/workspaces/{workspace}/releases", json={"app_id": first, "version": "1.0"}),
        409,
        "CONFLICT",
    )
    assert body["details"]["version"] == "1.0"
    add(api, org, workspace, "releases", app_id=second, version="1.0")  # another app may reuse it


def test_secret_values_are_refused_and_never_stored(api, org, workspace, settings):
    import psycopg

    response = api.post(
        f"/v1/orgs/{org}/workspaces/{workspace}/secrets", json={"name": "KEY", "value": "sk-very-secret-value"}
    )
    body = assert_422(response, ["body", "value"])
    assert "sk-very-secret-value" not in response.text and body["detail"][0]["input"] is None
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM stored_events WHERE position('sk-very-secret-value' in "
            "convert_from(state, 'UTF8')) > 0"
        ).fetchone()[0]
    assert stored == 0


def test_invalid_fields_answer_422_naming_them(api, org, workspace):
    base = f"/v1/orgs/{org}/workspaces/{workspace}"
    app_id = add(api, org, workspace, "apps", name="a")["app_id"]
    assert_422(api.post(f"{base}/apps", json={}), ["body", "name"])
    assert_422(api.post(f"{base}/apps", json={"name": ""}), ["body", "name"])
    assert_422(api.post(f"{base}/endpoints", json={"app_id": app_id, "name": "e", "url": "ftp://x"}), ["body", "url"])
    assert_422(
        api.post(f"{base}/endpoints", json={"app_id": app_id, "name": "e", "total_stages": 0}), ["body", "total_stages"]
    )
    assert_422(api.post(f"{base}/sources", json={"name": "s", "status": "done"}), ["body", "status"])
    assert_422(api.post(f"{base}/sources", json={"name": "s", "chunks": -1}), ["body", "chunks"])
    assert_422(api.put(f"{base}/apps/{app_id}", json={"colour": "red"}), ["body", "colour"])
    assert_422(api.get(f"{base}/apps", params={"limit": 0}), ["query", "limit"])


def test_deleted_workspace_hides_its_catalog(api, org, workspace):
    add(api, org, workspace, "apps", name="a")
    deleted = api.delete(f"/v1/orgs/{org}/workspaces/{workspace}")
    after = {"X-Min-Position": position_of(deleted)}
    assert_envelope(api.get(f"/v1/orgs/{org}/workspaces/{workspace}/apps", headers=after), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(
        api.post(f"/v1/orgs/{org}/workspaces/{workspace}/apps", json={"name": "b"}), 404, "RESOURCE_NOT_FOUND"
    )


def test_catalog_pages_see_each_item_once(api, org, workspace):
    made = [add(api, org, workspace, "models", name=f"m{i}", provider="p")["model_id"] for i in range(7)]
    seen, cursor = [], None
    last = api.post(f"/v1/orgs/{org}/workspaces/{workspace}/models", json={"name": "last"})
    made.append(last.json()["model_id"])
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get(
            f"/v1/orgs/{org}/workspaces/{workspace}/models",
            params=params,
            headers={"X-Min-Position": position_of(last)},
        ).json()
        seen += [m["model_id"] for m in page["models"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == made
