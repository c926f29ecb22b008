"""A GET by id right after the create that answered it finds the resource, with no header, however far the
views lag. Here they never catch up: the API runs without relay and projector, so nothing reaches a view."""

from __future__ import annotations

import httpx
import pytest

from domain.catalog import KINDS
from tests.conftest import (
    ROOT_TOKEN,
    RunningRoles,
    as_token,
    assert_envelope,
    issue_token,
    migrated_settings,
    scratch_database,
)

# Each kind's create body, given the ids of the app and namespace it may point at.
BODIES = {
    "apps": lambda app, ns: {"name": "a"},
    "releases": lambda app, ns: {"app_id": app, "version": "1.0.0", "notes": "n"},
    "endpoints": lambda app, ns: {"app_id": app, "name": "e", "total_stages": 3},
    "augmentations": lambda app, ns: {"app_id": app, "name": "g", "type": "t"},
    "namespaces": lambda app, ns: {"name": "n", "app_id": app},
    "threads": lambda app, ns: {"namespace_id": ns, "title": "t"},
    "sources": lambda app, ns: {"name": "s", "namespace_id": ns, "status": "indexed", "chunks": 4},
    "secrets": lambda app, ns: {"name": "k", "type": "api-key"},
    "models": lambda app, ns: {"name": "m", "provider": "p"},
}


@pytest.fixture(scope="module")
def apis(server_urls, tmp_path_factory):
    """Two API processes' worth of roles on one database, and no pipeline behind them."""
    admin_url, nats_url = server_urls
    with scratch_database(admin_url, "mm_lagging") as database_url:
        settings = migrated_settings(database_url, nats_url, tmp_path_factory.mktemp("lagging"))
        first, second = RunningRoles(settings, {"api"}).start(), RunningRoles(settings, {"api"}).start()
        yield first, second
        second.stop()
        first.stop()


@pytest.fixture()
def root(apis):
    with as_token(apis[0], ROOT_TOKEN) as client:
        yield client


def created(response: httpx.Response, status: int = 201) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def found(client: httpx.Client, path: str) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def not_found(client: httpx.Client, cases: dict[str, str]) -> None:
    """Each path answers 404 naming the resource type it maps to."""
    for path, resource_type in cases.items():
        body = assert_envelope(client.get(path), 404, "RESOURCE_NOT_FOUND")
        assert body["details"]["resource_type"] == resource_type, path


def scaffold(client: httpx.Client, org: str) -> dict:
    """A workspace with an app, a namespace, an endpoint, an action and a run: none of them in any view."""
    workspace = created(client.post(f"/v1/orgs/{org}/workspaces", json={"name": "w", "tags": ["t"]}))
    base = f"/v1/orgs/{org}/workspaces/{workspace['workspace_id']}"
    app = created(client.post(f"{base}/apps", json={"name": "a"}))
    namespace = created(client.post(f"{base}/namespaces", json={"name": "n"}))
    endpoint = created(client.post(f"{base}/endpoints", json={"app_id": app["app_id"], "name": "echo"}))
    actions = f"{base}/apps/{app['app_id']}/actions"
    body = {"name": "act", "endpoint_id": endpoint["endpoint_id"], "namespace_id": namespace["namespace_id"]}
    action = created(client.post(actions, json=body))
    run = created(client.post(f"{actions}/{action['action_id']}/trigger", json={"payload": {"k": 1}}), 202)
    return {
        "workspace": workspace,
        "base": base,
        "app": app,
        "namespace": namespace,
        "endpoint": endpoint,
        "actions": actions,
        "action": action,
        "run": run,
    }


def test_every_resource_is_found_by_id_right_after_its_create(root, org):
    made = scaffold(root, org)
    base, ws = made["base"], made["workspace"]
    assert found(root, f"/v1/orgs/{org}/workspaces")["total"] == 0  # the view has nothing: lists may lag
    assert found(root, base) == ws
    assert ws["bucket_status"] == "pending" and ws["s3_bucket"] is None  # no provisioner runs here

    environment = created(root.post(f"{base}/environments", json={"name": "Prod"}))["environment"]
    assert found(root, f"{base}/environments/{environment['environment_id']}") == environment
    assert environment["is_default"] and environment["org_id"] == org
    # Reads under the new workspace and environment find them too, though their lists are still empty.
    assert found(root, f"{base}/environments")["total"] == 0
    assert found(root, f"{base}/environments/{environment['environment_id']}/deployments")["total"] == 0

    app_id, namespace_id = made["app"]["app_id"], made["namespace"]["namespace_id"]
    for kind, body in BODIES.items():
        item = created(root.post(f"{base}/{kind}", json=body(app_id, namespace_id)))
        assert found(root, f"{base}/{kind}/{item[KINDS[kind].id_field]}") == item, kind
        assert found(root, f"{base}/{kind}")["total"] == 0, kind

    action = made["action"]
    assert found(root, f"{made['actions']}/{action['action_id']}") == action
    assert found(root, made["actions"])["total"] == 0  # the app just created is found behind its actions

    run = made["run"]
    got = found(root, f"{made['actions']}/{action['action_id']}/runs/{run['run_id']}")
    assert {k: got[k] for k in ("run_id", "action_id", "execution_id", "status")} == {
        k: run[k] for k in ("run_id", "action_id", "execution_id", "status")
    }
    assert got["workspace_id"] == ws["workspace_id"] and got["trigger_type"] == "manual"
    assert got["resolved_payload"] == {"k": 1} and got["attempt"] == 1
    assert found(root, f"{made['actions']}/{action['action_id']}/runs")["total"] == 0


def test_a_resource_created_through_one_api_process_is_found_through_another(apis, root, org):
    member = issue_token(root, org, "member")
    with as_token(apis[0], member) as first, as_token(apis[1], member) as second:
        made = scaffold(first, org)
        assert found(second, made["base"]) == made["workspace"]
        assert found(second, f"{made['base']}/apps/{made['app']['app_id']}") == made["app"]
        assert found(second, f"{made['actions']}/{made['action']['action_id']}") == made["action"]
        run = found(second, f"{made['actions']}/{made['action']['action_id']}/runs/{made['run']['run_id']}")
        assert run["run_id"] == made["run"]["run_id"]
        environment = created(first.post(f"{made['base']}/environments", json={"name": "dev"}))["environment"]
        assert found(second, f"{made['base']}/environments/{environment['environment_id']}") == environment


def test_another_orgs_ids_never_answer_from_the_store(apis, root, org):
    mine = scaffold(root, org)
    environment = created(root.post(f"{mine['base']}/environments", json={"name": "dev"}))["environment"]
    other_org = org + "-other"
    other = scaffold(root, other_org)
    other_token = issue_token(root, other_org, "owner")
    with as_token(apis[0], other_token) as stranger:
        assert_envelope(stranger.get(mine["base"]), 403, "FORBIDDEN")
        assert_envelope(stranger.get(f"{mine['base']}/apps/{mine['app']['app_id']}"), 403, "FORBIDDEN")
        # Under the stranger's own org and workspace (found: it was just created), this org's ids are unknown.
        their_ws = other["workspace"]["workspace_id"]
        assert found(stranger, other["base"])["workspace_id"] == their_ws
        cases = {
            f"/v1/orgs/{other_org}/workspaces/{mine['workspace']['workspace_id']}": "workspace",
            f"{other['base']}/apps/{mine['app']['app_id']}": "app",
            f"{other['base']}/environments/{environment['environment_id']}": "environment",
            f"{other['base']}/apps/{other['app']['app_id']}/actions/{mine['action']['action_id']}": "action",
            f"{other['actions']}/{other['action']['action_id']}/runs/{mine['run']['run_id']}": "run",
        }
        not_found(stranger, cases)
    # Nor does an id of this org under the wrong parent or of the wrong kind, nor an unknown one.
    base = mine["base"]
    misplaced = {
        f"{base}/namespaces/{mine['app']['app_id']}": "namespace",
        f"/v1/orgs/{org}/workspaces/{other['workspace']['workspace_id']}/apps": "workspace",
        f"{base}/apps/{mine['app']['app_id']}/actions/{other['action']['action_id']}": "action",
        f"{mine['actions']}/{mine['action']['action_id']}/runs/run_unknown": "run",
        f"{base}/apps/app_unknown": "app",
        f"{base}/environments/env_unknown": "environment",
        f"/v1/orgs/{org}/workspaces/ws_unknown": "workspace",
        f"/v1/orgs/{org}/workspaces/ws_unknown/environments": "workspace",
    }
    not_found(root, misplaced)


def test_a_resource_deleted_in_the_store_is_not_found_while_the_view_lags(root, org):
    made = scaffold(root, org)
    base = made["base"]
    kept, removed = (created(root.post(f"{base}/models", json={"name": n})) for n in ("kept", "removed"))
    assert root.delete(f"{base}/models/{removed['model_id']}").status_code == 200
    assert found(root, f"{base}/models/{kept['model_id']}") == kept
    assert_envelope(root.get(f"{base}/models/{removed['model_id']}"), 404, "RESOURCE_NOT_FOUND")

    first, second = (created(root.post(f"{base}/environments", json={"name": n}))["environment"] for n in "ab")
    assert root.delete(f"{base}/environments/{first['environment_id']}").status_code == 200
    assert_envelope(root.get(f"{base}/environments/{first['environment_id']}"), 404, "RESOURCE_NOT_FOUND")
    assert found(root, f"{base}/environments/{second['environment_id']}")["is_default"]  # handed over

    action_path = f"{made['actions']}/{made['action']['action_id']}"
    assert root.delete(action_path).status_code == 204
    assert_envelope(root.get(action_path), 404, "RESOURCE_NOT_FOUND")
    assert found(root, f"{base}/apps/{made['app']['app_id']}") == made["app"]

    assert root.delete(base).status_code == 200
    not_found(root, dict.fromkeys((base, f"{base}/environments", f"{base}/models/{kept['model_id']}"), "workspace"))


def test_the_view_answers_what_the_store_answered_once_it_catches_up(server_urls, tmp_path_factory, org):
    admin_url, nats_url = server_urls
    with scratch_database(admin_url, "mm_catchup") as database_url:
        settings = migrated_settings(database_url, nats_url, tmp_path_factory.mktemp("catchup"))
        api = RunningRoles(settings, {"api"}).start()
        try:
            with as_token(api, ROOT_TOKEN) as client:
                made = scaffold(client, org)
                environment = created(client.post(f"{made['base']}/environments", json={"name": "e"}))
                paths = [
                    made["base"],
                    f"{made['base']}/environments/{environment['environment']['environment_id']}",
                    f"{made['base']}/apps/{made['app']['app_id']}",
                    f"{made['base']}/namespaces/{made['namespace']['namespace_id']}",
                    f"{made['base']}/endpoints/{made['endpoint']['endpoint_id']}",
                    f"{made['actions']}/{made['action']['action_id']}",
                    f"{made['actions']}/{made['action']['action_id']}/runs/{made['run']['run_id']}",
                ]
                from_store = [found(client, path) for path in paths]
                head = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "last"}).headers["X-Event-Position"]
                pipeline = RunningRoles(settings, {"relay", "projector"}).start()
                try:
                    client.headers["X-Min-Position"] = head
                    from_view = [found(client, path) for path in paths]
                finally:
                    pipeline.stop()
        finally:
            api.stop()
    workspace_only = {"bucket_status", "s3_bucket", "updated_at"}  # the provisioner may have moved on since
    counters = {"total_runs", "last_run_at", "last_run_status", "last_execution_id"}
    for path, stored, viewed in zip(paths, from_store, from_view, strict=True):
        differing = {key for key in stored if stored[key] != viewed[key]}
        if path == made["base"]:
            assert differing <= workspace_only, differing
        elif path.endswith(made["action"]["action_id"]):
            # Only the view counts an action's runs: the store's answer has none of the run just triggered.
            assert differing == counters, differing
            assert (stored["total_runs"], viewed["total_runs"]) == (0, 1)
        else:
            assert not differing, (path, differing)
