"""Use cases of `commands/` on either store: in memory (no database) and PostgreSQL (a database of their own).

The same use case, unchanged, against the `eventstore.EventStore` protocol: what it decides, what it
stores, and what it answers when another writer got there first or a unique value is taken.
"""

from __future__ import annotations

import secrets

import pytest

import migrations
from commands.catalog import add_item
from commands.unit_of_work import CommandRunner, Context, UnitOfWork
from commands.workspaces import create_workspace, update_workspace
from domain.aggregates import AGGREGATES
from domain.errors import Conflict
from domain.events import SYSTEM_ACTOR
from domain.workspace import WORKSPACE, UpdateWorkspace
from eventstore import Codec, InMemoryEventStore
from tests.conftest import open_store, scratch_database


@pytest.fixture(scope="module")
def use_case_database(server_urls):
    """A database of these tests' own: in the session's, its bucket provisioner answers every WorkspaceCreated
    with an event of its own, racing the streams these tests count."""
    with scratch_database(server_urls[0], "mm_use_cases") as database_url:
        migrations.migrate(database_url)
        yield database_url


@pytest.fixture(params=["memory", "postgres"])
def commands(request):
    if request.param == "memory":
        store = InMemoryEventStore(Codec(AGGREGATES))
    else:
        store = open_store(request.getfixturevalue("use_case_database"))
    yield CommandRunner(store)
    store.close()


@pytest.fixture()
def ctx() -> Context:
    return Context(org_id="org-" + secrets.token_hex(4), actor=SYSTEM_ACTOR, trace_id=secrets.token_hex(16))


def test_creating_a_workspace_stores_its_created_event_at_the_answered_position(commands, ctx):
    outcome = create_workspace(commands, ctx, name="research", tags=["ml"])
    workspace = outcome.state
    assert (workspace.name, workspace.tags, workspace.org_id) == ("research", ["ml"], ctx.org_id)
    [stored] = commands.store.load(workspace.workspace_id)
    assert stored.topic == "WorkspaceCreated"
    [recorded] = commands.store.read(outcome.position - 1, 1)
    assert (recorded.stream_id, recorded.type) == (workspace.workspace_id, "WorkspaceCreated")
    assert recorded.meta.org_id == ctx.org_id
    state, version = commands.load(WORKSPACE, workspace.workspace_id, ctx.org_id)
    assert state == workspace and version == 1
    assert commands.load(WORKSPACE, workspace.workspace_id, "another-org") == (None, 0)


def test_a_use_case_that_loses_a_race_is_decided_again_on_the_newer_state(commands, ctx):
    workspace_id = create_workspace(commands, ctx, name="first").state.workspace_id
    attempts = []

    def rename(uow: UnitOfWork):
        current = uow.require(WORKSPACE, workspace_id)
        attempts.append(current.name)
        if len(attempts) == 1:  # another writer commits between this load and this commit
            update_workspace(commands, ctx, workspace_id, UpdateWorkspace(name="theirs"))
        return uow.decide(WORKSPACE, workspace_id, UpdateWorkspace(description=f"after {current.name}"))

    state, _ = commands.run(ctx, rename)
    assert attempts == ["first", "theirs"]
    assert (state.name, state.description) == ("theirs", "after theirs")
    assert len(commands.store.load(workspace_id)) == 3


def test_a_use_case_whose_streams_keep_changing_answers_conflict(commands, ctx):
    workspace_id = create_workspace(commands, ctx, name="busy").state.workspace_id

    def always_overtaken(uow: UnitOfWork):
        uow.require(WORKSPACE, workspace_id)
        update_workspace(commands, ctx, workspace_id, UpdateWorkspace(description=secrets.token_hex(4)))
        return uow.decide(WORKSPACE, workspace_id, UpdateWorkspace(name="mine"))

    with pytest.raises(Conflict):
        commands.run(ctx, always_overtaken)
    assert commands.load(WORKSPACE, workspace_id, ctx.org_id)[0].name == "busy"


def test_a_release_version_is_claimed_once_per_app(commands, ctx):
    workspace_id = create_workspace(commands, ctx, name="apps").state.workspace_id
    app_id = add_item(commands, ctx, workspace_id, "apps", {"name": "api"}).state.item_id
    other_app = add_item(commands, ctx, workspace_id, "apps", {"name": "web"}).state.item_id
    add_item(commands, ctx, workspace_id, "releases", {"app_id": app_id, "version": "1.0.0"})
    with pytest.raises(Conflict) as conflict:
        add_item(commands, ctx, workspace_id, "releases", {"app_id": app_id, "version": "1.0.0"})
    assert conflict.value.details == {"version": "1.0.0", "app_id": app_id}
    # Another app's versions are its own.
    assert add_item(commands, ctx, workspace_id, "releases", {"app_id": other_app, "version": "1.0.0"}).position
