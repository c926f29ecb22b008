"""Tokens and permissions: 401 and 403 exactly as the seeds show them."""

from __future__ import annotations

import secrets
import time

import httpx
import psycopg

from tests.conftest import ROOT_TOKEN, as_token, assert_422, assert_envelope, issue_token, open_store, position_of
from tests.support import ManualClock, eventually


def test_missing_or_bad_token_is_401(system, org):
    with httpx.Client(base_url=system.url) as anonymous:
        body = assert_envelope(anonymous.get(f"/v1/orgs/{org}/workspaces"), 401, "AUTHENTICATION_FAILED")
        assert body["message"] == "Authentication required" and body["details"] == {}
        assert_envelope(
            anonymous.get(f"/v1/orgs/{org}/workspaces", headers={"Authorization": "Basic eDp5"}),
            401,
            "AUTHENTICATION_FAILED",
        )
    for token in ("garbage", "tok_abc.def", "tok_.x"):
        with as_token(system, token) as client:
            assert_envelope(client.get(f"/v1/orgs/{org}/workspaces"), 401, "AUTHENTICATION_FAILED")


def test_401_comes_before_validation(system, org):
    with as_token(system, "wrong") as client:
        assert_envelope(client.post(f"/v1/orgs/{org}/workspaces", json={"name": ""}), 401, "AUTHENTICATION_FAILED")


def test_issued_token_works_at_once_and_its_secret_is_shown_once(api, system, org):
    issued = api.post(f"/v1/orgs/{org}/tokens", json={"name": "ci", "role": "member", "user_id": "u-1"})
    assert issued.status_code == 201
    body = issued.json()
    assert body["token"].startswith(body["token_id"] + ".")
    with as_token(system, body["token"]) as member:
        created = member.post(f"/v1/orgs/{org}/workspaces", json={"name": "mine"})
        assert created.status_code == 201 and created.json()["owner_id"] == "u-1"
    listed = api.get(f"/v1/orgs/{org}/tokens", headers={"X-Min-Position": position_of(issued)}).json()
    assert listed["total"] == 1 and "token" not in listed["tokens"][0]
    assert listed["tokens"][0]["token_id"] == body["token_id"] and listed["tokens"][0]["is_active"]


def test_secret_is_stored_only_as_a_hash(api, settings, org):
    token = issue_token(api, org, "viewer")
    secret = token.split(".", 1)[1]
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT state FROM stored_events WHERE topic = 'TokenIssued'").fetchall()
    assert rows and not any(secret.encode() in bytes(row[0]) for row in rows)


def test_revoked_token_is_refused(api, system, org):
    token = issue_token(api, org, "member")
    token_id = token.split(".")[0]
    with as_token(system, token) as member:
        assert member.get(f"/v1/orgs/{org}/workspaces").status_code == 200
        assert api.delete(f"/v1/orgs/{org}/tokens/{token_id}").status_code == 200
        assert_envelope(member.get(f"/v1/orgs/{org}/workspaces"), 401, "AUTHENTICATION_FAILED")
    assert_envelope(api.delete(f"/v1/orgs/{org}/tokens/{token_id}"), 404, "RESOURCE_NOT_FOUND")


def test_another_orgs_token_is_403_naming_the_permission(api, system, org):
    token = issue_token(api, org, "owner")
    with as_token(system, token) as owner:
        body = assert_envelope(owner.get(f"/v1/orgs/other-{org}/workspaces"), 403, "FORBIDDEN")
        assert body["message"] == "You don't have permission to perform this action"
        assert body["details"] == {"required_permission": "workspace:read"}


def test_roles_grant_what_they_should(api, system, org):
    with as_token(system, issue_token(api, org, "viewer")) as viewer:
        assert viewer.get(f"/v1/orgs/{org}/workspaces").status_code == 200
        body = assert_envelope(viewer.post(f"/v1/orgs/{org}/workspaces", json={"name": "x"}), 403, "FORBIDDEN")
        assert body["details"]["required_permission"] == "workspace:create"
    with as_token(system, issue_token(api, org, "member")) as member:
        body = assert_envelope(
            member.post(f"/v1/orgs/{org}/tokens", json={"name": "x", "role": "viewer"}), 403, "FORBIDDEN"
        )
        assert body["details"]["required_permission"] == "token:create"
        assert_envelope(member.get(f"/v1/orgs/{org}/tokens"), 403, "FORBIDDEN")
    with as_token(system, issue_token(api, org, "auditor")) as auditor:
        assert auditor.get(f"/v1/orgs/{org}/workspaces").status_code == 200
        assert_envelope(auditor.delete(f"/v1/orgs/{org}/workspaces/ws_x"), 403, "FORBIDDEN")
    with as_token(system, issue_token(api, org, "admin")) as admin:
        assert_envelope(admin.post(f"/v1/orgs/{org}/tokens", json={"name": "x", "role": "owner"}), 403, "FORBIDDEN")
        assert admin.post(f"/v1/orgs/{org}/tokens", json={"name": "x", "role": "member"}).status_code == 201


def test_bad_token_request_is_422(api, org):
    response = api.post(f"/v1/orgs/{org}/tokens", json={"name": "x", "role": "superuser"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "role"]


def test_an_admin_cannot_revoke_an_owner_token(api, system, org):
    owner_id = issue_token(api, org, "owner").split(".")[0]
    with as_token(system, issue_token(api, org, "admin")) as admin:
        body = assert_envelope(admin.delete(f"/v1/orgs/{org}/tokens/{owner_id}"), 403, "FORBIDDEN")
        assert body["details"]["required_permission"] == "token:delete:owner"


def test_control_characters_never_reach_a_view(api, org):
    response = api.post(f"/v1/orgs/{org}/tokens", json={"name": "x\u0000y", "role": "viewer"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "name"]


def test_cached_tokens_are_confirmed_in_one_query_and_a_revocation_elsewhere_evicts_them(settings):
    import asyncio

    from commands.tokens import TokenVerifier, issue_token, revoke_token
    from commands.unit_of_work import CommandRunner, Context
    from domain.events import Actor

    store = open_store(settings.database_url)
    try:
        commands = CommandRunner(store)
        ctx = Context(org_id="org-refresh", actor=Actor("user", "u"), trace_id="t")
        (_, kept), (_, revoked) = (issue_token(commands, ctx, name=n, role="viewer") for n in ("kept", "revoked"))
        clock = ManualClock()  # the cache's ttl runs on it: no waiting, and no race with a slow machine
        verifier = TokenVerifier(commands, ttl=0.5, clock=clock)
        assert verifier.verify(kept) is not None and verifier.verify(revoked) is not None
        revoke_token(commands, ctx, revoked.split(".")[0], None)  # as another API process would: no eviction here
        assert verifier.verify_cached(revoked) is not None  # still cached, within its ttl

        async def refresh():
            async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
                await verifier.refresh(conn)

        asyncio.run(refresh())
        assert verifier.verify_cached(revoked) is None and verifier.verify(revoked) is None
        for _ in range(3):  # confirmed again and again, the unchanged token outlives its first ttl with no load
            clock.advance(0.3)
            asyncio.run(refresh())
            assert verifier.verify_cached(kept) is not None
        clock.advance(0.6)  # unconfirmed for longer than the ttl: no longer trusted from the cache
        assert verifier.verify_cached(kept) is None
    finally:
        store.close()


def stored_records(settings, org: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(settings.database_url) as conn:
        path = "convert_from(record, 'UTF8')::json->>'path'"
        query = f"SELECT {path}, user_id FROM activity WHERE org_id = %s ORDER BY id"
        return conn.execute(query, (org,)).fetchall()


def wait_for_path(settings, org: str, path: str) -> list[tuple[str, str | None]]:
    return eventually(
        lambda: stored_records(settings, org),
        until=lambda rows: any(stored_path == path for stored_path, _ in rows),
        timeout=20,
        what=f"the record of {path}",
    )


def test_requests_without_a_valid_token_leave_no_record_in_the_org(api, system, settings, org):
    headers = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "User-Agent": "forger"}
    with httpx.Client(base_url=system.url, headers=headers) as anonymous:
        assert anonymous.get(f"/v1/orgs/{org}/workspaces/ws_forged?x=1").status_code == 401
        assert anonymous.post(f"/v1/orgs/{org}/workspaces", json={"name": "x"}).status_code == 401
        bad = {"Authorization": "Bearer tok_nope.nope"}
        assert anonymous.delete(f"/v1/orgs/{org}/workspaces/ws_forged", headers=bad).status_code == 401
    # Recorded after those by the same process: once it is stored, they would have been too.
    assert api.get(f"/v1/orgs/{org}/workspaces/ws_witness").status_code == 404
    rows = wait_for_path(settings, org, f"/v1/orgs/{org}/workspaces/ws_witness")
    time.sleep(0.3)  # then no more: records that must not exist cannot be waited for, only given time to show
    assert stored_records(settings, org) == rows == [(f"/v1/orgs/{org}/workspaces/ws_witness", "root")]


def test_another_orgs_token_leaves_no_record_in_the_org_it_calls(api, system, settings, org):
    target = f"target-{org}"
    with as_token(system, issue_token(api, org, "owner", user_id="mallory")) as outsider:
        assert_envelope(outsider.post(f"/v1/orgs/{target}/workspaces", json={"name": "x"}), 403, "FORBIDDEN")
        assert_envelope(outsider.get(f"/v1/orgs/{target}/workspaces/ws_forged"), 403, "FORBIDDEN")
    assert api.get(f"/v1/orgs/{target}/workspaces/ws_witness").status_code == 404
    rows = wait_for_path(settings, target, f"/v1/orgs/{target}/workspaces/ws_witness")
    time.sleep(0.3)  # then no more: records that must not exist cannot be waited for, only given time to show
    assert stored_records(settings, target) == rows and [user for _, user in rows] == ["root"]
    assert "mallory" not in {user for _, user in stored_records(settings, org)}
    metrics = api.get("/metrics").text
    assert 'mm_activity_unrecorded_total{reason="other_org"}' in metrics


def test_an_admin_cannot_issue_a_token_that_acts_as_another_user(api, system, settings, org):
    issue_token(api, org, "owner", user_id="olga")
    with as_token(system, issue_token(api, org, "admin", user_id="adam")) as admin:
        for principal_type in ("user", "service"):
            body = assert_envelope(
                admin.post(
                    f"/v1/orgs/{org}/tokens",
                    json={"name": "x", "role": "member", "user_id": "olga", "principal_type": principal_type},
                ),
                403,
                "FORBIDDEN",
            )
            assert body["details"] == {"required_permission": "token:create:other_user"}
        own = admin.post(f"/v1/orgs/{org}/tokens", json={"name": "mine", "role": "member"})
        assert own.status_code == 201 and own.json()["user_id"] == "adam"
        named_self = admin.post(f"/v1/orgs/{org}/tokens", json={"name": "me", "role": "viewer", "user_id": "adam"})
        assert named_self.status_code == 201 and named_self.json()["user_id"] == "adam"
        ci_body = {"name": "ci", "role": "member", "principal_type": "service"}
        service = admin.post(f"/v1/orgs/{org}/tokens", json=ci_body)
        assert service.status_code == 201 and service.json()["user_id"] is None
    with as_token(system, own.json()["token"]) as member:
        created = member.post(f"/v1/orgs/{org}/workspaces", json={"name": "by-adam"})
        assert created.status_code == 201 and created.json()["owner_id"] == "adam"
    with as_token(system, service.json()["token"]) as ci:
        assert ci.get(f"/v1/orgs/{org}/workspaces/ws_by_ci").status_code == 404
    rows = dict(wait_for_path(settings, org, f"/v1/orgs/{org}/workspaces/ws_by_ci"))
    assert rows[f"/v1/orgs/{org}/workspaces"] == "adam"  # the record's user is the issuer's, not the owner's
    assert rows[f"/v1/orgs/{org}/workspaces/ws_by_ci"] == service.json()["token_id"]  # a service is itself
    with as_token(system, issue_token(api, org, "owner", user_id="olga")) as owner:
        for_bob = owner.post(f"/v1/orgs/{org}/tokens", json={"name": "bob", "role": "admin", "user_id": "bob"})
        assert for_bob.status_code == 201 and for_bob.json()["user_id"] == "bob"


def test_no_token_may_be_issued_for_an_id_the_system_acts_as(api, system, org):
    # `created_by: root` (or `executor`, `system`) would read as the operator's or the system's doing.
    with as_token(system, issue_token(api, org, "owner", user_id="olga")) as owner:
        for caller in (api, owner):
            for user_id in ("root", "executor", "system", "mechamental", "Root", " root"):
                for principal_type in ("user", "service"):
                    body = {"name": "x", "role": "member", "user_id": user_id, "principal_type": principal_type}
                    answer = caller.post(f"/v1/orgs/{org}/tokens", json=body)
                    assert_422(answer, ["body", "user_id"])
                    assert answer.json()["detail"][0]["input"] == user_id
        fine = owner.post(f"/v1/orgs/{org}/tokens", json={"name": "x", "role": "member", "user_id": "rooted"})
        assert fine.status_code == 201


def test_metrics_need_the_metrics_or_the_root_token(api, settings, org):
    from msgspec.structs import replace

    from tests.conftest import RunningRoles

    metrics_token = "metrics-" + secrets.token_hex(8)
    roles = RunningRoles(replace(settings, metrics_token=metrics_token), {"api"}).start()
    try:
        with httpx.Client(base_url=roles.url, timeout=30) as client:
            assert_envelope(client.get("/metrics"), 401, "AUTHENTICATION_FAILED")
            member = issue_token(api, org, "owner")
            for wrong in (member, "wrong", f"{metrics_token}x"):
                answer = client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
                assert_envelope(answer, 401, "AUTHENTICATION_FAILED")
            for right in (metrics_token, ROOT_TOKEN):
                answer = client.get("/metrics", headers={"Authorization": f"Bearer {right}"})
                assert answer.status_code == 200 and "mm_log_head" in answer.text
            as_scraper = {"Authorization": f"Bearer {metrics_token}"}
            assert_envelope(client.get(f"/v1/orgs/{org}/workspaces", headers=as_scraper), 401, "AUTHENTICATION_FAILED")
    finally:
        roles.stop()
