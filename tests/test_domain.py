"""The aggregates' rules, given past events, when a command, then new events or an error. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.errors import Conflict, NotFound, ValidationFailed
from domain.events import SYSTEM_ACTOR, EventMeta, decode, encode
from domain.token import TOKEN, IssueToken, RevokeToken, TokenIssued, TokenRevoked
from domain.workspace import (
    WORKSPACE,
    CreateWorkspace,
    DeleteWorkspace,
    RecordBucketFailed,
    RecordBucketProvisioned,
    UpdateWorkspace,
    WorkspaceBucketProvisioned,
    WorkspaceCreated,
    WorkspaceDeleted,
    WorkspaceUpdated,
)

META = EventMeta(org_id="acme", actor=SYSTEM_ACTOR, trace_id="t" * 32, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))


def given(kind, *events):
    state = None
    for event in events:
        state = kind.evolve(state, event, META)
    return state


def when(kind, past, command):
    return kind.decide(given(kind, *past), command)


CREATED = WorkspaceCreated(
    workspace_id="ws_1",
    name="alpha",
    description=None,
    owner_id="u1",
    subscription_plan_id=None,
    is_active=True,
    tags=[],
    region="us-east-1",
)


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
    fields = rejected_fields(
        WORKSPACE, [], create(name="", region="mars-1", tags=["x" * 51] + ["t"] * 20, organization_id="other")
    )
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
    issued = TokenIssued(
        token_id="tok_1", name="n", role="viewer", user_id=None, principal_type="user", secret_hash="h"
    )
    assert when(TOKEN, [issued], RevokeToken()) == [TokenRevoked()]
    with pytest.raises(NotFound):
        when(TOKEN, [issued, TokenRevoked()], RevokeToken())


# Environments
from domain.environments import (  # noqa: E402
    ENVIRONMENTS,
    CreateEnvironment,
    DefaultEnvironmentChanged,
    DeleteEnvironment,
    DeployRelease,
    EnvironmentCreated,
    ReleaseDeployed,
    UndeployApp,
    UpdateEnvironment,
)


def env_created(environment_id: str, slug: str) -> EnvironmentCreated:
    return EnvironmentCreated(
        workspace_id="ws_1", environment_id=environment_id, name=slug, slug=slug, description=None
    )


PROD = [env_created("env_1", "prod"), DefaultEnvironmentChanged(environment_id="env_1")]


def deployed(release_id: str, previous: str | None, action: str = "deploy") -> ReleaseDeployed:
    return ReleaseDeployed(
        environment_id="env_1",
        deployment_id=f"dep_{release_id}",
        app_id="app_1",
        release_id=release_id,
        previous_release_id=previous,
        action=action,
    )


def test_first_environment_becomes_default_and_a_slug_is_derived():
    events = when(ENVIRONMENTS, [], CreateEnvironment(workspace_id="ws_1", environment_id="env_1", name="Prod EU"))
    assert events == [
        EnvironmentCreated(
            workspace_id="ws_1", environment_id="env_1", name="Prod EU", slug="prod-eu", description=None
        ),
        DefaultEnvironmentChanged(environment_id="env_1"),
    ]


def test_a_taken_slug_conflicts():
    with pytest.raises(Conflict):
        when(ENVIRONMENTS, PROD, CreateEnvironment(workspace_id="ws_1", environment_id="env_2", name="prod"))


def test_making_another_default_takes_it_from_the_previous_one():
    past = [*PROD, env_created("env_2", "staging")]
    events = when(ENVIRONMENTS, past, UpdateEnvironment(environment_id="env_2", is_default=True))
    state = given(ENVIRONMENTS, *past, *events)
    assert [e.is_default for e in state.live()] == [False, True]


def test_deleting_the_default_promotes_the_oldest_remaining():
    past = [*PROD, env_created("env_2", "staging"), env_created("env_3", "dev")]
    events = when(ENVIRONMENTS, past, DeleteEnvironment(environment_id="env_1"))
    assert events[-1] == DefaultEnvironmentChanged(environment_id="env_2")


def test_deploys_name_their_direction_and_previous_release():
    assert when(
        ENVIRONMENTS,
        PROD,
        DeployRelease(
            environment_id="env_1", deployment_id="dep_r1", app_id="app_1", release_id="r1", older_than_active=False
        ),
    ) == [deployed("r1", None)]
    assert when(
        ENVIRONMENTS,
        [*PROD, deployed("r2", None)],
        DeployRelease(
            environment_id="env_1", deployment_id="dep_r1", app_id="app_1", release_id="r1", older_than_active=True
        ),
    ) == [deployed("r1", "r2", "rollback")]
    with pytest.raises(Conflict):
        when(
            ENVIRONMENTS,
            [*PROD, deployed("r2", None)],
            DeployRelease(
                environment_id="env_1", deployment_id="dep_x", app_id="app_1", release_id="r2", older_than_active=False
            ),
        )


def test_undeploy_needs_a_deployment_and_delete_needs_none():
    with pytest.raises(NotFound):
        when(ENVIRONMENTS, PROD, UndeployApp(environment_id="env_1", deployment_id="dep_u", app_id="app_1"))
    with pytest.raises(Conflict):
        when(ENVIRONMENTS, [*PROD, deployed("r1", None)], DeleteEnvironment(environment_id="env_1"))


def test_evolve_leaves_the_given_state_untouched():
    before = given(ENVIRONMENTS, *PROD)
    after = ENVIRONMENTS.evolve(before, deployed("r1", None), META)
    assert before.environments["env_1"].active_deployments == {}
    assert after.environments["env_1"].active_deployments == {"app_1": "r1"}


# Catalog
from domain.catalog import CATALOG, AddItem, ChangeItem  # noqa: E402


def test_catalog_fields_get_defaults_and_are_checked_by_kind():
    [added] = when(
        CATALOG, [], AddItem(item_id="source_1", kind="sources", workspace_id="ws_1", fields={"name": "manual"})
    )
    assert added.fields == {
        "name": "manual",
        "type": None,
        "namespace_id": None,
        "status": "pending",
        "chunks": 0,
        "tokens": 0,
        "bytes": 0,
    }
    assert rejected_fields(
        CATALOG,
        [],
        AddItem(
            item_id="source_1", kind="sources", workspace_id="ws_1", fields={"name": "m", "chunks": True, "status": "x"}
        ),
    ) == [("chunks",), ("status",)]
    assert rejected_fields(CATALOG, [added], ChangeItem({"namespace_id": "namespace_2"})) == [("namespace_id",)]


def test_a_secret_value_is_refused():
    assert rejected_fields(
        CATALOG,
        [],
        AddItem(item_id="secret_1", kind="secrets", workspace_id="ws_1", fields={"name": "K", "value": "s3cr3t"}),
    ) == [("value",)]
