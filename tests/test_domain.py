"""The aggregates' rules, given past events, when a command, then new events or an error. No I/O."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from domain.errors import Conflict, NotFound, ValidationFailed
from domain.events import SYSTEM_ACTOR, EventMeta, decode, encode
from domain.token import TOKEN, IssueToken, RevokeToken, TokenIssued, TokenRevoked
from domain.workspace import (
    WORKSPACE, CreateWorkspace, DeleteWorkspace, RecordBucketFailed, RecordBucketProvisioned, UpdateWorkspace,
    WorkspaceBucketProvisioned, WorkspaceCreated, WorkspaceDeleted, WorkspaceUpdated,
)

META = EventMeta(org_id="acme", actor=SYSTEM_ACTOR, trace_id="t" * 32,
                 occurred_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def given(kind, *events):
    state = None
    for event in events:
        state = kind.evolve(state, event, META)
    return state


def when(kind, past, command):
    return kind.decide(given(kind, *past), command)


CREATED = WorkspaceCreated(workspace_id="ws_1", name="alpha", description=None, owner_id="u1",
                           subscription_plan_id=None, is_active=True, tags=[], region="us-east-1")


def create(**fields) -> CreateWorkspace:
    return CreateWorkspace(**{"workspace_id": "ws_1", "org_id": "acme", "name": "alpha", "owner_id": "u1", **fields})


def rejected_fields(kind, past, command) -> list[tuple[str, ...]]:
    with pytest.raises(ValidationFailed) as failure:
        when(kind, past, command)
    return [e.field for e in failure.value.errors]


def test_create_workspace_defaults_region_and_starts_with_pending_bucket():
    [event] = when(WORKSPACE, [], create())
    assert event == CREATED
    state = given(WORKSPACE, event)
    assert state.bucket_status == "pending" and state.s3_bucket is None and state.org_id == "acme"


def test_create_workspace_rejects_every_broken_rule_at_once():
    fields = rejected_fields(WORKSPACE, [], create(name="", region="mars-1", tags=["x" * 51] + ["t"] * 20,
                                                   organization_id="other"))
    assert ("organization_id",) in fields and ("name",) in fields and ("region",) in fields
    assert ("tags",) in fields and ("tags", "0") in fields


def test_name_of_100_characters_is_accepted_and_101_refused():
    assert when(WORKSPACE, [], create(name="n" * 100))
    assert rejected_fields(WORKSPACE, [], create(name="n" * 101)) == [("name",)]


def test_organization_id_equal_to_the_path_org_is_accepted():
    assert when(WORKSPACE, [], create(organization_id="acme"))


def test_update_changes_only_the_given_fields():
    [event] = when(WORKSPACE, [CREATED], UpdateWorkspace(description="d", tags=["a"]))
    state = given(WORKSPACE, CREATED, event)
    assert (state.name, state.description, state.tags) == ("alpha", "d", ["a"])


def test_update_validates_like_create():
    assert rejected_fields(WORKSPACE, [CREATED], UpdateWorkspace(region="nowhere")) == [("region",)]


def test_nothing_changes_a_deleted_workspace():
    for command in (UpdateWorkspace(name="x"), DeleteWorkspace(), RecordBucketProvisioned(s3_bucket="b")):
        with pytest.raises(NotFound):
            when(WORKSPACE, [CREATED, WorkspaceDeleted()], command)


def test_creating_an_existing_workspace_conflicts():
    with pytest.raises(Conflict):
        when(WORKSPACE, [CREATED], create())


def test_bucket_provisioning_is_recorded_once():
    provisioned = WorkspaceBucketProvisioned(s3_bucket="mm-ws-1")
    assert when(WORKSPACE, [CREATED], RecordBucketProvisioned(s3_bucket="mm-ws-1")) == [provisioned]
    assert when(WORKSPACE, [CREATED, provisioned], RecordBucketProvisioned(s3_bucket="mm-ws-1")) == []
    assert when(WORKSPACE, [CREATED, provisioned], RecordBucketFailed(reason="disk")) == []


def test_updated_event_round_trips_through_the_log_without_unset_fields():
    event = WorkspaceUpdated(name="beta")
    topic, data = encode(event, META)
    assert b"description" not in data
    assert decode(topic, data) == (META, event)


def test_token_issue_validates_role_and_revocation_is_final():
    with pytest.raises(ValidationFailed):
        when(TOKEN, [], IssueToken(token_id="tok_1", name="n", role="superuser", secret_hash="h"))
    issued = TokenIssued(token_id="tok_1", name="n", role="viewer", user_id=None, principal_type="user",
                         secret_hash="h")
    assert when(TOKEN, [issued], RevokeToken()) == [TokenRevoked()]
    with pytest.raises(NotFound):
        when(TOKEN, [issued, TokenRevoked()], RevokeToken())
