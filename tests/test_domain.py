"""The aggregates' rules, given past events, when a command, then new events or an error. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from msgspec.structs import replace

from domain.aggregates import AGGREGATES
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.events import SYSTEM_ACTOR, EventMeta
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
from eventstore import Codec
from tests.specification import When, specification

META = EventMeta(org_id="acme", actor=SYSTEM_ACTOR, trace_id="t" * 32, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))

given_workspace = specification(WORKSPACE, time=META.occurred_at)
given_token = specification(TOKEN, time=META.occurred_at)


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


def rejected_fields(when: When) -> list[tuple[str, ...]]:
    return [e.field for e in when.raises(ValidationFailed).errors]


def test_create_workspace_defaults_region_and_starts_with_pending_bucket():
    state = given_workspace().when(create()).then(CREATED).state
    assert state.bucket_status == "pending" and state.s3_bucket is None and state.org_id == "acme"


def test_create_workspace_rejects_every_broken_rule_at_once():
    fields = rejected_fields(
        given_workspace().when(
            create(name="", region="mars-1", tags=["x" * 51] + ["t"] * 20, organization_id="other")
        )
    )
    assert ("organization_id",) in fields and ("name",) in fields and ("region",) in fields
    assert ("tags",) in fields and ("tags", "0") in fields


def test_name_of_100_characters_is_accepted_and_101_refused():
    given_workspace().when(create(name="n" * 100)).then(replace(CREATED, name="n" * 100))
    assert rejected_fields(given_workspace().when(create(name="n" * 101))) == [("name",)]


def test_organization_id_equal_to_the_path_org_is_accepted():
    given_workspace().when(create(organization_id="acme")).then(CREATED)


def test_update_changes_only_the_given_fields():
    state = given_workspace(CREATED).when(UpdateWorkspace(description="d", tags=["a"])).state
    assert (state.name, state.description, state.tags) == ("alpha", "d", ["a"])


def test_update_validates_like_create():
    assert rejected_fields(given_workspace(CREATED).when(UpdateWorkspace(region="nowhere"))) == [("region",)]


@pytest.mark.parametrize(
    "command",
    [UpdateWorkspace(name="x"), DeleteWorkspace(), RecordBucketProvisioned(s3_bucket="b")],
    ids=["update", "delete", "record bucket provisioned"],
)
def test_nothing_changes_a_deleted_workspace(command):
    given_workspace(CREATED, WorkspaceDeleted()).when(command).raises(NotFound)


def test_creating_an_existing_workspace_conflicts():
    given_workspace(CREATED).when(create()).raises(Conflict)


PROVISIONED = WorkspaceBucketProvisioned(s3_bucket="mm-ws-1")


def test_bucket_provisioning_is_recorded_once():
    given_workspace(CREATED).when(RecordBucketProvisioned(s3_bucket="mm-ws-1")).then(PROVISIONED)
    given_workspace(CREATED, PROVISIONED).when(RecordBucketProvisioned(s3_bucket="mm-ws-1")).then()


def test_a_bucket_failure_reported_after_provisioning_changes_nothing():
    given_workspace(CREATED, PROVISIONED).when(RecordBucketFailed(reason="disk")).then()


def test_updated_event_round_trips_through_the_log_without_unset_fields():
    event = WorkspaceUpdated(name="beta")
    codec = Codec(AGGREGATES)
    topic, data = codec.encode(event, META)
    assert b"description" not in data
    assert codec.decode(topic, data) == (META, event)


ISSUED = TokenIssued(token_id="tok_1", name="n", role="viewer", user_id=None, principal_type="user", secret_hash="h")


def test_a_token_of_an_unknown_role_is_refused():
    given_token().when(IssueToken(token_id="tok_1", name="n", role="superuser", secret_hash="h")).raises(
        ValidationFailed
    )


def test_an_issued_token_is_revoked():
    given_token(ISSUED).when(RevokeToken()).then(TokenRevoked())


def test_a_revoked_token_stays_revoked():
    given_token(ISSUED, TokenRevoked()).when(RevokeToken()).raises(NotFound)


# Environments
from domain.environment import (  # noqa: E402
    ENVIRONMENT,
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
given_environments = specification(ENVIRONMENT, time=META.occurred_at)


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
    given_environments().when(
        CreateEnvironment(workspace_id="ws_1", environment_id="env_1", name="Prod EU")
    ).then(
        EnvironmentCreated(
            workspace_id="ws_1", environment_id="env_1", name="Prod EU", slug="prod-eu", description=None
        ),
        DefaultEnvironmentChanged(environment_id="env_1"),
    )


def test_a_taken_slug_conflicts():
    given_environments(PROD).when(
        CreateEnvironment(workspace_id="ws_1", environment_id="env_2", name="prod")
    ).raises(Conflict)


def test_making_another_default_takes_it_from_the_previous_one():
    given = given_environments(PROD, env_created("env_2", "staging"))
    state = given.when(UpdateEnvironment(environment_id="env_2", is_default=True)).state
    assert [e.is_default for e in state.live()] == [False, True]


def test_deleting_the_default_promotes_the_oldest_remaining():
    given = given_environments(PROD, env_created("env_2", "staging"), env_created("env_3", "dev"))
    events = given.when(DeleteEnvironment(environment_id="env_1")).events
    assert events[-1] == DefaultEnvironmentChanged(environment_id="env_2")


def deploy(release_id: str, deployment_id: str, *, older_than_active: bool) -> DeployRelease:
    return DeployRelease(
        environment_id="env_1",
        deployment_id=deployment_id,
        app_id="app_1",
        release_id=release_id,
        older_than_active=older_than_active,
    )


def test_a_first_deploy_records_no_previous_release():
    given_environments(PROD).when(deploy("r1", "dep_r1", older_than_active=False)).then(deployed("r1", None))


def test_deploying_an_older_release_is_a_rollback_that_records_the_previous_release():
    given_environments(PROD, deployed("r2", None)).when(deploy("r1", "dep_r1", older_than_active=True)).then(
        deployed("r1", "r2", "rollback")
    )


def test_deploying_the_active_release_again_conflicts():
    given_environments(PROD, deployed("r2", None)).when(deploy("r2", "dep_x", older_than_active=False)).raises(
        Conflict
    )


def test_undeploying_an_app_that_is_not_deployed_is_not_found():
    given_environments(PROD).when(
        UndeployApp(environment_id="env_1", deployment_id="dep_u", app_id="app_1")
    ).raises(NotFound)


def test_an_environment_with_a_deployment_cannot_be_deleted():
    given_environments(PROD, deployed("r1", None)).when(DeleteEnvironment(environment_id="env_1")).raises(Conflict)


def test_evolve_leaves_the_given_state_untouched():
    before = given_environments(PROD).state
    after = ENVIRONMENT.evolve(before, deployed("r1", None), META)
    assert before.environments["env_1"].active_deployments == {}
    assert after.environments["env_1"].active_deployments == {"app_1": "r1"}


# Catalog
from domain.catalog import CATALOG, AddItem, CatalogItemAdded, ChangeItem  # noqa: E402

given_catalog = specification(CATALOG, time=META.occurred_at)
SOURCE_DEFAULTS = {
    "type": None,
    "namespace_id": None,
    "status": "pending",
    "chunks": 0,
    "tokens": 0,
    "bytes": 0,
}


def add_source(**fields) -> AddItem:
    return AddItem(item_id="source_1", kind="sources", workspace_id="ws_1", fields=fields)


def test_a_new_catalog_item_gets_the_defaults_of_its_kind():
    given_catalog().when(add_source(name="manual")).then(
        CatalogItemAdded(
            item_id="source_1", kind="sources", workspace_id="ws_1", fields={"name": "manual", **SOURCE_DEFAULTS}
        )
    )


def test_catalog_fields_are_checked_by_the_type_their_kind_gives_them():
    assert rejected_fields(given_catalog().when(add_source(name="m", chunks=True, status="x"))) == [
        ("chunks",),
        ("status",),
    ]


def test_a_catalog_items_reference_cannot_be_changed_after_creation():
    [added] = given_catalog().when(add_source(name="manual")).events
    assert rejected_fields(given_catalog(added).when(ChangeItem({"namespace_id": "namespace_2"}))) == [
        ("namespace_id",)
    ]


def test_a_secret_value_is_refused():
    assert rejected_fields(
        given_catalog().when(
            AddItem(item_id="secret_1", kind="secrets", workspace_id="ws_1", fields={"name": "K", "value": "s3cr3t"})
        )
    ) == [("value",)]
