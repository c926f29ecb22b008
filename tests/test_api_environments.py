"""Environments and deployments through HTTP on the real pipeline."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import assert_422, assert_envelope, position_of

ENVIRONMENT_KEYS = {
    "environment_id",
    "workspace_id",
    "org_id",
    "name",
    "slug",
    "description",
    "is_default",
    "active_deployments",
    "status",
    "created_by",
    "created_at",
    "updated_at",
}


@pytest.fixture()
def base(api, org) -> str:
    workspace_id = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "deploys"}).json()["workspace_id"]
    return f"/v1/orgs/{org}/workspaces/{workspace_id}"


def create_env(api, base, **body) -> dict:
    response = api.post(f"{base}/environments", json=body)
    assert response.status_code == 201, response.text
    return response.json()["environment"]


def test_create_answers_the_wrapped_seed_shape_and_derives_the_slug(api, base):
    response = api.post(f"{base}/environments", json={"name": "Staging EU #1"})
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "Environment created successfully" and set(body["environment"]) == ENVIRONMENT_KEYS
    environment = body["environment"]
    assert environment["slug"] == "staging-eu-1" and environment["is_default"] and environment["status"] == "active"
    got = api.get(
        f"{base}/environments/{environment['environment_id']}", headers={"X-Min-Position": position_of(response)}
    )
    assert got.json() == environment


def test_exactly_one_default(api, base):
    first = create_env(api, base, name="prod")
    second = create_env(api, base, name="staging")
    assert first["is_default"] and not second["is_default"]
    made = api.put(f"{base}/environments/{second['environment_id']}", json={"is_default": True})
    assert made.json()["message"] == "Environment updated successfully" and made.json()["environment"]["is_default"]
    listed = api.get(f"{base}/environments", headers={"X-Min-Position": position_of(made)}).json()
    assert listed["total"] == 2 and [e["is_default"] for e in listed["environments"]] == [False, True]
    assert_422(
        api.put(f"{base}/environments/{second['environment_id']}", json={"is_default": False}), ["body", "is_default"]
    )
    deleted = api.delete(f"{base}/environments/{second['environment_id']}")
    assert deleted.json() == {"message": "Environment deleted successfully"}
    remaining = api.get(f"{base}/environments", headers={"X-Min-Position": position_of(deleted)}).json()
    assert [e["environment_id"] for e in remaining["environments"]] == [first["environment_id"]]
    assert remaining["environments"][0]["is_default"]


def test_slugs_are_validated_and_unique_also_when_creates_race(api, base):
    assert_422(api.post(f"{base}/environments", json={"name": "x", "slug": "Bad Slug"}), ["body", "slug"])
    assert_422(api.post(f"{base}/environments", json={"name": "x", "slug": "a" * 64}), ["body", "slug"])
    create_env(api, base, name="one", slug="prod")
    assert_envelope(api.post(f"{base}/environments", json={"name": "two", "slug": "prod"}), 409, "CONFLICT")
    answers = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(api.post(f"{base}/environments", json={"name": "racer", "slug": "race"}))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7, [a.text for a in answers]
    listed = api.get(
        f"{base}/environments",
        headers={"X-Min-Position": position_of(next(a for a in answers if a.status_code == 201))},
    ).json()
    assert [e["slug"] for e in listed["environments"]].count("race") == 1


def test_deploy_rollback_undeploy_history(api, base):
    app = api.post(f"{base}/apps", json={"name": "assistant"}).json()["app_id"]
    releases = [
        api.post(f"{base}/releases", json={"app_id": app, "version": v}).json()["release_id"]
        for v in ("1.0", "2.0", "3.0")
    ]
    prod = create_env(api, base, name="prod")["environment_id"]
    create_env(api, base, name="staging")
    env = f"{base}/environments/{prod}"

    answers = [
        api.post(f"{env}/deploy", json={"app_id": app, "release_id": r})
        for r in (releases[0], releases[1], releases[0])
    ]
    for answer, release in zip(answers, (releases[0], releases[1], releases[0]), strict=False):
        assert answer.status_code == 200, answer.text
        assert answer.json()["message"] == "Release deployed successfully"
        assert (answer.json()["app_id"], answer.json()["release_id"], answer.json()["environment_id"]) == (
            app,
            release,
            prod,
        )
    assert_envelope(api.post(f"{env}/deploy", json={"app_id": app, "release_id": releases[0]}), 409, "CONFLICT")
    got = api.get(env, headers={"X-Min-Position": position_of(answers[-1])}).json()
    assert got["active_deployments"] == {app: releases[0]}

    removed = api.delete(f"{env}/deploy/{app}")
    assert removed.status_code == 200 and removed.json()["message"] == "App undeployed from environment"
    history = api.get(f"{env}/deployments", headers={"X-Min-Position": position_of(removed)}).json()
    assert history["total"] == 4
    newest_first = history["deployments"]
    assert [d["action"] for d in newest_first] == ["undeploy", "rollback", "deploy", "deploy"]
    assert [d["previous_release_id"] for d in newest_first] == [releases[0], releases[1], releases[0], None]
    assert newest_first[0]["deployment_id"] == removed.json()["deployment_id"]
    assert all(d["deployed_by"] == "root" for d in newest_first)
    assert api.get(f"{env}/deployments", params={"limit": 2}).json()["deployments"] == newest_first[:2]
    assert_422(api.get(f"{env}/deployments", params={"limit": 201}), ["query", "limit"])
    assert_envelope(api.delete(f"{env}/deploy/{app}"), 404, "RESOURCE_NOT_FOUND")


def test_deploy_checks_the_catalog(api, base):
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    other = api.post(f"{base}/apps", json={"name": "b"}).json()["app_id"]
    foreign = api.post(f"{base}/releases", json={"app_id": other, "version": "1"}).json()["release_id"]
    env = f"{base}/environments/{create_env(api, base, name='prod')['environment_id']}"
    body = assert_envelope(
        api.post(f"{env}/deploy", json={"app_id": "app_missing", "release_id": foreign}), 404, "RESOURCE_NOT_FOUND"
    )
    assert body["details"] == {"resource_type": "app", "resource_id": "app_missing"}
    body = assert_envelope(
        api.post(f"{env}/deploy", json={"app_id": app, "release_id": "release_missing"}), 404, "RESOURCE_NOT_FOUND"
    )
    assert body["details"] == {"resource_type": "release", "resource_id": "release_missing"}
    assert_422(api.post(f"{env}/deploy", json={"app_id": app, "release_id": foreign}), ["body", "release_id"])
    assert_422(api.post(f"{env}/deploy", json={"app_id": app}), ["body", "release_id"])
    body = assert_envelope(
        api.post(f"{base}/environments/env_missing/deploy", json={"app_id": app, "release_id": foreign}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert body["details"]["resource_type"] == "environment"


def test_deployed_things_cannot_be_deleted(api, base):
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    release = api.post(f"{base}/releases", json={"app_id": app, "version": "1"}).json()["release_id"]
    prod = create_env(api, base, name="prod")["environment_id"]
    assert (
        api.post(f"{base}/environments/{prod}/deploy", json={"app_id": app, "release_id": release}).status_code == 200
    )
    assert_envelope(api.delete(f"{base}/environments/{prod}"), 409, "CONFLICT")
    assert_envelope(api.delete(f"{base}/apps/{app}"), 409, "CONFLICT")
    assert_envelope(api.delete(f"{base}/releases/{release}"), 409, "CONFLICT")
    assert api.delete(f"{base}/environments/{prod}/deploy/{app}").status_code == 200
    assert api.delete(f"{base}/environments/{prod}").status_code == 200
    assert api.delete(f"{base}/apps/{app}").status_code == 200


def test_a_deleted_workspaces_environments_answer_404(api, org, base):
    environment_id = create_env(api, base, name="prod")["environment_id"]
    deleted = api.delete(base)
    after = {"X-Min-Position": position_of(deleted)}
    for response in (
        api.get(f"{base}/environments", headers=after),
        api.get(f"{base}/environments/{environment_id}", headers=after),
        api.post(f"{base}/environments", json={"name": "x"}),
        api.put(f"{base}/environments/{environment_id}", json={"name": "y"}),
    ):
        body = assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
        assert body["details"]["resource_type"] == "workspace"
