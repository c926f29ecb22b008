"""The environments of one workspace, as one aggregate.

Slugs are unique within a workspace and a workspace with environments has exactly one default:
both are rules across environments, so the workspace's environments decide together.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec
from msgspec import UNSET, UnsetType

from domain.errors import Conflict, NotFound, Rules
from domain.events import AggregateType, DomainEvent, EventMeta

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # no leading or trailing hyphen


def environments_stream(workspace_id: str) -> str:
    return f"{workspace_id}.environments"


def slug_from(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return slug or "env"


class Environment(msgspec.Struct):
    environment_id: str
    name: str
    slug: str
    description: str | None
    is_default: bool
    active_deployments: dict[str, str]  # app id -> release id
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


class Environments(msgspec.Struct):
    workspace_id: str
    org_id: str
    environments: dict[str, Environment]  # in creation order

    def live(self) -> list[Environment]:
        return [e for e in self.environments.values() if not e.deleted]

    def get(self, environment_id: str) -> Environment:
        environment = self.environments.get(environment_id)
        if environment is None or environment.deleted:
            raise NotFound("environment", environment_id)
        return environment

    def deployed_releases(self, app_id: str) -> list[tuple[str, str]]:
        """(environment id, release id) wherever the app is deployed."""
        return [(e.environment_id, e.active_deployments[app_id]) for e in self.live() if app_id in e.active_deployments]


# Commands
class CreateEnvironment(msgspec.Struct, frozen=True):
    workspace_id: str
    environment_id: str
    name: str
    slug: str | None = None
    description: str | None = None
    is_default: bool | None = None


class UpdateEnvironment(msgspec.Struct, frozen=True):
    environment_id: str
    name: str | UnsetType = UNSET
    slug: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    is_default: bool | UnsetType = UNSET


class DeleteEnvironment(msgspec.Struct, frozen=True):
    environment_id: str


class DeployRelease(msgspec.Struct, frozen=True):
    environment_id: str
    deployment_id: str
    app_id: str
    release_id: str
    older_than_active: bool  # the catalog knows release order; a deploy of an older one is a rollback


class UndeployApp(msgspec.Struct, frozen=True):
    environment_id: str
    deployment_id: str
    app_id: str


# Events
class EnvironmentCreated(DomainEvent, frozen=True):
    workspace_id: str
    environment_id: str
    name: str
    slug: str
    description: str | None


class EnvironmentUpdated(DomainEvent, frozen=True, omit_defaults=True):
    environment_id: str
    name: str | UnsetType = UNSET
    slug: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET


class DefaultEnvironmentChanged(DomainEvent, frozen=True):
    environment_id: str


class EnvironmentDeleted(DomainEvent, frozen=True):
    environment_id: str


class ReleaseDeployed(DomainEvent, frozen=True):
    environment_id: str
    deployment_id: str
    app_id: str
    release_id: str
    previous_release_id: str | None
    action: str  # deploy | rollback


class AppUndeployed(DomainEvent, frozen=True):
    environment_id: str
    deployment_id: str
    app_id: str
    previous_release_id: str


EVENTS = (
    EnvironmentCreated,
    EnvironmentUpdated,
    DefaultEnvironmentChanged,
    EnvironmentDeleted,
    ReleaseDeployed,
    AppUndeployed,
)

EnvironmentCommand = CreateEnvironment | UpdateEnvironment | DeleteEnvironment | DeployRelease | UndeployApp


def _check(rules: Rules, state: Environments | None, environment_id: str, name, slug, description) -> None:
    if isinstance(name, str):
        rules.text("name", name, min_length=1, max_length=100)
    if isinstance(description, str):
        rules.text("description", description, min_length=0, max_length=2000)
    if isinstance(slug, str) and not SLUG.fullmatch(slug):
        rules.fail(
            "slug",
            "Slug must be 1-63 lower-case letters, digits or hyphens, starting and ending with a letter or digit",
            "string_pattern_mismatch",
            slug,
            pattern=SLUG.pattern,
        )


def _slug_taken(state: Environments | None, slug: str, environment_id: str) -> bool:
    return state is not None and any(e.slug == slug and e.environment_id != environment_id for e in state.live())


def decide(state: Environments | None, command: EnvironmentCommand) -> list[DomainEvent]:
    match command:
        case CreateEnvironment():
            rules = Rules()
            _check(rules, state, command.environment_id, command.name, command.slug, command.description)
            rules.check()
            slug = command.slug or slug_from(command.name)
            if _slug_taken(state, slug, command.environment_id):
                raise Conflict(f"An environment with slug '{slug}' already exists in this workspace", slug=slug)
            events: list[DomainEvent] = [
                EnvironmentCreated(
                    workspace_id=command.workspace_id,
                    environment_id=command.environment_id,
                    name=command.name,
                    slug=slug,
                    description=command.description,
                )
            ]
            first = state is None or not state.live()
            if first or command.is_default:
                events.append(DefaultEnvironmentChanged(environment_id=command.environment_id))
            return events
    if state is None:
        raise NotFound("environment", command.environment_id)
    environment = state.get(command.environment_id)
    match command:
        case UpdateEnvironment():
            rules = Rules()
            _check(rules, state, command.environment_id, command.name, command.slug, command.description)
            if command.is_default is False and environment.is_default:
                rules.fail(
                    "is_default",
                    "A workspace always has one default environment: make another one the default instead",
                    "value_error",
                    False,
                )
            rules.check()
            if isinstance(command.slug, str) and _slug_taken(state, command.slug, command.environment_id):
                raise Conflict(
                    f"An environment with slug '{command.slug}' already exists in this workspace", slug=command.slug
                )
            events = [
                EnvironmentUpdated(
                    environment_id=command.environment_id,
                    name=command.name,
                    slug=command.slug,
                    description=command.description,
                )
            ]
            if command.is_default is True and not environment.is_default:
                events.append(DefaultEnvironmentChanged(environment_id=command.environment_id))
            return events
        case DeleteEnvironment():
            if environment.active_deployments:
                raise Conflict(
                    "The environment still has active deployments; undeploy them first",
                    active_deployments=dict(environment.active_deployments),
                )
            events = [EnvironmentDeleted(environment_id=command.environment_id)]
            others = [e for e in state.live() if e.environment_id != command.environment_id]
            if environment.is_default and others:
                events.append(DefaultEnvironmentChanged(environment_id=others[0].environment_id))
            return events
        case DeployRelease():
            previous = environment.active_deployments.get(command.app_id)
            if previous == command.release_id:
                raise Conflict("This release is already active in the environment", release_id=command.release_id)
            action = "rollback" if previous is not None and command.older_than_active else "deploy"
            return [
                ReleaseDeployed(
                    environment_id=command.environment_id,
                    deployment_id=command.deployment_id,
                    app_id=command.app_id,
                    release_id=command.release_id,
                    previous_release_id=previous,
                    action=action,
                )
            ]
        case UndeployApp():
            previous = environment.active_deployments.get(command.app_id)
            if previous is None:
                raise NotFound("deployment", command.app_id)
            return [
                AppUndeployed(
                    environment_id=command.environment_id,
                    deployment_id=command.deployment_id,
                    app_id=command.app_id,
                    previous_release_id=previous,
                )
            ]
    raise TypeError(f"not an environment command: {command!r}")


def evolve(state: Environments | None, event: DomainEvent, meta: EventMeta) -> Environments:
    """Returns a new state; the given one is left as it was."""
    at = meta.occurred_at
    if isinstance(event, EnvironmentCreated):
        environments = dict(state.environments) if state else {}
        environments[event.environment_id] = Environment(
            environment_id=event.environment_id,
            name=event.name,
            slug=event.slug,
            description=event.description,
            is_default=False,
            active_deployments={},
            created_by=meta.actor.user_id or meta.actor.principal_id,
            created_at=at,
            updated_at=at,
        )
        return Environments(workspace_id=event.workspace_id, org_id=meta.org_id, environments=environments)
    assert state is not None
    environments = dict(state.environments)
    environment = environments[event.environment_id]  # type: ignore[attr-defined]
    replace = msgspec.structs.replace
    match event:
        case EnvironmentUpdated():
            changes = {f: getattr(event, f) for f in ("name", "slug", "description") if getattr(event, f) is not UNSET}
            environment = replace(environment, **changes, updated_at=at)
        case DefaultEnvironmentChanged():
            for other in environments.values():
                if other.is_default:
                    environments[other.environment_id] = replace(other, is_default=False, updated_at=at)
            environment = replace(environments[event.environment_id], is_default=True, updated_at=at)
        case EnvironmentDeleted():
            environment = replace(environment, deleted=True, is_default=False, updated_at=at)
        case ReleaseDeployed():
            environment = replace(
                environment,
                updated_at=at,
                active_deployments={**environment.active_deployments, event.app_id: event.release_id},
            )
        case AppUndeployed():
            active = {k: v for k, v in environment.active_deployments.items() if k != event.app_id}
            environment = replace(environment, active_deployments=active, updated_at=at)
    environments[environment.environment_id] = environment
    return replace(state, environments=environments)


ENVIRONMENT = AggregateType("environment", decide, evolve, creates=(CreateEnvironment,), events=EVENTS)
