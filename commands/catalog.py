"""Catalog use cases, one set for all nine kinds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from commands.unit_of_work import CommandRunner, Context, Outcome, UnitOfWork, new_id
from domain.catalog import CATALOG, KINDS, AddItem, CatalogItem, ChangeItem, Kind, RemoveItem
from domain.environment import ENVIRONMENT, environments_stream
from domain.errors import Conflict, NotFound
from domain.workspace import WORKSPACE


def require_workspace(uow: UnitOfWork, workspace_id: str) -> None:
    uow.require(WORKSPACE, workspace_id)


def require_item(uow: UnitOfWork, kind: str, item_id: str, workspace_id: str) -> CatalogItem:
    """The live item of that kind in that workspace, or 404 naming it (e.g. `app`, `app_...`)."""
    item = uow.load(CATALOG, item_id)
    if item is None or item.deleted or item.kind != kind or item.workspace_id != workspace_id:
        raise NotFound(KINDS[kind].resource, item_id)
    return item


def _require_parents(uow: UnitOfWork, spec: Kind, fields: dict[str, Any], workspace_id: str) -> None:
    for name, field in spec.refs.items():
        if fields.get(name):
            require_item(uow, field.ref, fields[name], workspace_id)


def _unique_claim(uow: UnitOfWork, spec: Kind, item: CatalogItem, *, release: bool = False) -> None:
    if spec.unique is None:
        return
    within, field = spec.unique
    scope, key = f"{spec.kind}.{field}:{item.fields[within]}", str(item.fields[field])
    if release:
        uow.release(scope, key, item.item_id)
    else:
        uow.claim(
            scope,
            key,
            item.item_id,
            Conflict(
                f"A {spec.resource} with {field} '{key}' already exists for this {within.removesuffix('_id')}",
                **{field: key, within: item.fields[within]},
            ),
        )


def _refuse_if_deployed(uow: UnitOfWork, item: CatalogItem) -> None:
    environments = uow.load(ENVIRONMENT, environments_stream(item.workspace_id))
    if environments is None:
        return
    if item.kind == "apps":
        where = environments.deployed_releases(item.item_id)
    else:
        where = [
            (e.environment_id, r)
            for e in environments.live()
            for r in e.active_deployments.values()
            if r == item.item_id
        ]
    if where:
        raise Conflict(
            f"The {KINDS[item.kind].resource} is deployed; undeploy it first",
            environments=[environment_id for environment_id, _ in where],
        )


# What must hold before an item of a kind may be removed.
REMOVAL_GUARDS: dict[str, Callable[[UnitOfWork, CatalogItem], None]] = {
    "apps": _refuse_if_deployed,
    "releases": _refuse_if_deployed,
}


def add_item(commands: CommandRunner, ctx: Context, workspace_id: str, kind: str, fields: dict[str, Any]) -> Outcome:
    spec = KINDS[kind]
    item_id = new_id(spec.resource)

    def use_case(uow: UnitOfWork) -> CatalogItem:
        require_workspace(uow, workspace_id)
        item = uow.create(CATALOG, item_id, AddItem(item_id, kind, workspace_id, fields))
        _require_parents(uow, spec, item.fields, workspace_id)
        _unique_claim(uow, spec, item)
        return item

    return Outcome(*commands.run(ctx, use_case))


def change_item(
    commands: CommandRunner, ctx: Context, workspace_id: str, kind: str, item_id: str, changes: dict[str, Any]
) -> Outcome:
    spec = KINDS[kind]

    def use_case(uow: UnitOfWork) -> CatalogItem:
        require_workspace(uow, workspace_id)
        before = require_item(uow, kind, item_id, workspace_id)
        item = uow.decide(CATALOG, item_id, ChangeItem(changes))
        if spec.unique and before.fields[spec.unique[1]] != item.fields[spec.unique[1]]:
            _unique_claim(uow, spec, before, release=True)
            _unique_claim(uow, spec, item)
        return item

    return Outcome(*commands.run(ctx, use_case))


def remove_item(commands: CommandRunner, ctx: Context, workspace_id: str, kind: str, item_id: str) -> Outcome:
    spec = KINDS[kind]

    def use_case(uow: UnitOfWork) -> CatalogItem:
        require_workspace(uow, workspace_id)
        item = require_item(uow, kind, item_id, workspace_id)
        if guard := REMOVAL_GUARDS.get(kind):
            guard(uow, item)
        _unique_claim(uow, spec, item, release=True)
        return uow.decide(CATALOG, item_id, RemoveItem())

    return Outcome(*commands.run(ctx, use_case))
