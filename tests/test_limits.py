"""Limits on what a caller may send: body size, encoding, nesting, and request rate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.limits import RateLimited, RateLimiter
from api.metrics import Metrics
from commands.tokens import TokenVerifier
from mechamental.settings import Settings
from tests.conftest import assert_422, assert_envelope, open_store


def test_an_oversized_body_is_413(api, org):
    response = api.post(
        f"/v1/orgs/{org}/workspaces",
        content=b'{"name": "' + b"x" * 2_000_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")


def test_non_utf8_and_malformed_bodies_are_422(api, org):
    assert_422(
        api.post(
            f"/v1/orgs/{org}/workspaces", content=b'{"name": "\xff\xfe"}', headers={"content-type": "application/json"}
        ),
        ["body"],
    )
    assert_422(
        api.post(f"/v1/orgs/{org}/workspaces", content=b"[1, 2", headers={"content-type": "application/json"}), ["body"]
    )
    assert_422(api.post(f"/v1/orgs/{org}/workspaces", json=["not", "an", "object"]), ["body"])


def test_deep_or_huge_payloads_are_422(api, org):
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "w"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    ns = api.post(f"{base}/namespaces", json={"name": "n"}).json()["namespace_id"]
    endpoint = api.post(f"{base}/endpoints", json={"app_id": app, "name": "e"}).json()["endpoint_id"]
    deep: dict = {}
    cursor = deep
    for _ in range(40):
        cursor["k"] = {}
        cursor = cursor["k"]
    body = {"name": "x", "endpoint_id": endpoint, "namespace_id": ns}
    assert_422(api.post(f"{base}/apps/{app}/actions", json={**body, "payload": deep}), ["body", "payload"])
    assert_422(
        api.post(f"{base}/apps/{app}/actions", json={**body, "payload": {"k": "v" * 70_000}}), ["body", "payload"]
    )
    assert_422(api.post(f"{base}/apps", json={"name": "n" * 101}), ["body", "name"])


def api_services(settings: Settings, limiter: RateLimiter, token_verifier) -> SimpleNamespace:
    """What `create_app` takes, with only what authentication asks for: these requests never reach storage."""
    return SimpleNamespace(
        settings=settings,
        limiter=limiter,
        token_verifier=token_verifier,
        commands=None,
        store=SimpleNamespace(codec=None),
        pool=None,
        read_your_writes=None,
        workspace_cache=None,
        nats=SimpleNamespace(current=lambda: None),
        consumers=(),
        metrics=Metrics(),
    )


def test_the_rate_limit_answers_429_with_retry_after():
    settings = Settings(root_token="root")
    services = api_services(settings, RateLimiter(per_second=0.5, burst=2), token_verifier=None)
    with TestClient(app=create_app(services)) as client:
        headers = {"Authorization": "Bearer root"}
        # A malformed org id stops the request right after the limiter, so no storage is needed here.
        answers = [client.get("/v1/orgs/bad%20org/workspaces", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [422, 422, 429]
    body = assert_envelope(answers[2], 429, "RATE_LIMITED")
    assert int(answers[2].headers["Retry-After"]) >= 1 and body["details"]["retry_after_seconds"] > 0


def test_the_rate_limit_is_off_by_default():
    limiter = RateLimiter(per_second=Settings().rate_limit_per_second, burst=1)
    for _ in range(1000):
        limiter.take("caller")


def test_with_the_limit_on_unauthenticated_requests_get_429_after_the_burst():
    settings = Settings(root_token="root")
    limiter = RateLimiter(per_second=0.5, burst=2)
    # Tokens that are not of the `tok_<id>.<secret>` form are refused before the store is asked.
    services = api_services(settings, limiter, TokenVerifier(commands=None))
    with TestClient(app=create_app(services)) as client:
        answers = [client.get("/v1/orgs/acme/workspaces") for _ in range(3)]
        answers.append(client.get("/v1/orgs/acme/workspaces", headers={"Authorization": "Bearer wrong"}))
        answers.append(client.get("/metrics"))
        # A token of its own is not the address's budget.
        answers.append(client.get("/v1/orgs/bad%20org/workspaces", headers={"Authorization": "Bearer root"}))
    assert [a.status_code for a in answers] == [401, 401, 429, 429, 429, 422]
    assert int(answers[2].headers["Retry-After"]) >= 1


def test_failed_token_lookups_are_bounded_per_address_with_the_limit_off(settings):
    from commands.unit_of_work import CommandRunner

    store = open_store(settings.database_url)
    try:
        limiter = RateLimiter(per_second=0, burst=50, failures_per_second=0.5, failure_burst=3)
        verifier = TokenVerifier(CommandRunner(store))
        services = api_services(Settings(root_token="root"), limiter, verifier)
        with TestClient(app=create_app(services)) as client:
            unknown = [f"Bearer tok_{i}unknown.secret" for i in range(4)]  # each one a read of the store
            answers = [client.get("/v1/orgs/acme/workspaces", headers={"Authorization": a}) for a in unknown]
            # Failures that read nothing are not counted, and a valid token is not refused.
            answers.append(client.get("/v1/orgs/acme/workspaces", headers={"Authorization": "Bearer malformed"}))
            answers.append(client.get("/v1/orgs/bad%20org/workspaces", headers={"Authorization": "Bearer root"}))
    finally:
        store.close()
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 401, 422]
    assert_envelope(answers[3], 429, "RATE_LIMITED")


def test_rotating_client_addresses_resets_no_token_and_no_address_in_use():
    # The buckets used to be cleared all at once past 100,000 callers: an attacker rotating addresses reset
    # everyone's limits. Now the least recently used address goes, and tokens are kept apart from addresses.
    limiter = RateLimiter(per_second=0.001, burst=2)
    for _ in range(2):
        limiter.take("tok_victim")
        limiter.take_unauthenticated("203.0.113.7")
    for caller in (lambda: limiter.take("tok_victim"), lambda: limiter.take_unauthenticated("203.0.113.7")):
        with pytest.raises(RateLimited):
            caller()
    for i in range(120_000):
        limiter.take_unauthenticated(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        if i % 10_000 == 0:  # an address in use stays limited, however many others come and go
            with pytest.raises(RateLimited):
                limiter.take_unauthenticated("203.0.113.7")
    with pytest.raises(RateLimited):
        limiter.take("tok_victim")
    with pytest.raises(RateLimited):
        limiter.take_unauthenticated("203.0.113.7")
