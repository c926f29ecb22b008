"""The catalog's nine kinds, from one controller factory: each kind's routes, bodies and OpenAPI
schema are generated from its field list in `domain.catalog`."""

from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth import context_of
from api.common import Cursor, Limit, MinPosition, PathId, Views, command_answer
from api.schemas.common import MessageBody
from commands import catalog as use_cases
from commands.unit_of_work import CommandRunner
from domain.catalog import KINDS, CatalogItem, Field, Kind
from domain.errors import NotFound
from domain.secrets import masked_url
from projections import catalog as listing
from projections import workspaces
from projections.pagination import Page, decode_cursor
from projections.stored import stored_item

VIEWS = [listing.NAME, workspaces.NAME]


def _wire_type(field: Field) -> Any:
    if field.type == "choice":
        return Literal[field.choices]  # type: ignore[valid-type]
    return {"int": int, "bool": bool}.get(field.type, str)


def _bodies(kind: Kind) -> tuple[type, type, type, type]:
    """The create body, the update body (all optional), the item and the list, for one kind."""
    title = kind.resource.title()
    create_fields, update_fields = [], []
    for name, field in kind.fields.items():
        wire = _wire_type(field)
        if field.required:
            create_fields.append((name, wire))
        else:
            create_fields.append((name, wire | None, field.default))
        if field.type != "ref":
            update_fields.append((name, wire | None | msgspec.UnsetType, msgspec.UNSET))
    create = msgspec.defstruct(f"{title}Create", create_fields, forbid_unknown_fields=True)
    update = msgspec.defstruct(f"{title}Update", update_fields, forbid_unknown_fields=True)
    item = msgspec.defstruct(
        title,
        [
            (kind.id_field, str),
            ("workspace_id", str),
            *[(name, _wire_type(field) | None) for name, field in kind.fields.items()],
            ("created_by", str),
            ("created_at", datetime),
            ("updated_at", datetime),
        ],
    )
    page = msgspec.defstruct(
        f"{title}List", [("total", int), ("has_more", bool), ("next_cursor", str | None), (kind.kind, list[item])]
    )
    return create, update, item, page


def catalog_controller(kind: Kind) -> type[Controller]:
    Create, Update, Item, ItemList = _bodies(kind)
    resource, name = kind.resource, kind.kind
    urls = [field_name for field_name, field in kind.fields.items() if field.type == "url"]

    def view(state: CatalogItem) -> Any:
        # Every answer, the creator's own included: a URL's credentials are for the executor, not for readers.
        masked = {f: masked_url(state.fields[f]) for f in urls if state.fields.get(f)}
        return Item(
            **{
                kind.id_field: state.item_id,
                "workspace_id": state.workspace_id,
                **state.fields,
                **masked,
                "created_by": state.created_by,
                "created_at": state.created_at,
                "updated_at": state.updated_at,
            }
        )

    def fields_of(data: msgspec.Struct) -> dict[str, Any]:
        return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}

    class CatalogController(Controller):
        path = f"/v1/orgs/{{org_id:str}}/workspaces/{{workspace_id:str}}/{name}"
        tags = ["Catalog"]

        @get("/", opt={"permission": f"{resource}:read"}, summary=f"List {name.title()}")
        async def list_items(
            self,
            views: NamedDependency[Views],
            org_id: PathId,
            workspace_id: PathId,
            limit: Limit = 50,
            cursor: Cursor = None,
            min_position: MinPosition = None,
        ) -> ItemList:
            after = decode_cursor(cursor)
            await views.wait_for(VIEWS, min_position)
            async with views.connection() as conn:
                await views.require_workspace(conn, org_id, workspace_id, min_position)
                total, rows = await listing.list_items(conn, org_id, workspace_id, name, after, limit)
            page = Page(rows, limit, key_of=lambda row: row[0])
            return ItemList(
                total=total,
                has_more=page.has_more,
                next_cursor=page.next_cursor,
                **{name: [view(state) for _, state in page.items]},
            )

        @post(
            "/",
            opt={"permission": f"{resource}:create"},
            summary=f"Create {resource.title()}",
            status_code=201,
            sync_to_thread=True,
        )
        def create_item(
            self,
            request: Request,
            commands: NamedDependency[CommandRunner],
            org_id: PathId,
            workspace_id: PathId,
            data: JSONBody[Create],
        ) -> Response[Item]:
            outcome = use_cases.add_item(commands, context_of(request), workspace_id, name, fields_of(data))
            return command_answer(view(outcome.state), outcome, 201)

        @get("/{item_id:str}", opt={"permission": f"{resource}:read"}, summary=f"Get {resource.title()}")
        async def get_item(
            self,
            views: NamedDependency[Views],
            org_id: PathId,
            workspace_id: PathId,
            item_id: PathId,
            min_position: MinPosition = None,
        ) -> Item:
            await views.wait_for(VIEWS, min_position)
            async with views.connection() as conn:
                await views.require_workspace(conn, org_id, workspace_id, min_position)
                state = await listing.get_item(conn, org_id, workspace_id, name, item_id)
                if state is None:  # not in the view (yet): one just created is in the event store
                    state = await stored_item(conn, views.codec, org_id, workspace_id, name, item_id)
            if state is None:
                raise NotFound(resource, item_id)
            return view(state)

        @put(
            "/{item_id:str}",
            opt={"permission": f"{resource}:update"},
            summary=f"Update {resource.title()}",
            sync_to_thread=True,
        )
        def update_item(
            self,
            request: Request,
            commands: NamedDependency[CommandRunner],
            org_id: PathId,
            workspace_id: PathId,
            item_id: PathId,
            data: JSONBody[Update],
        ) -> Response[Item]:
            outcome = use_cases.change_item(commands, context_of(request), workspace_id, name, item_id, fields_of(data))
            return command_answer(view(outcome.state), outcome)

        @delete(
            "/{item_id:str}",
            opt={"permission": f"{resource}:delete"},
            summary=f"Delete {resource.title()}",
            status_code=200,
            sync_to_thread=True,
        )
        def delete_item(
            self,
            request: Request,
            commands: NamedDependency[CommandRunner],
            org_id: PathId,
            workspace_id: PathId,
            item_id: PathId,
        ) -> Response[MessageBody]:
            outcome = use_cases.remove_item(commands, context_of(request), workspace_id, name, item_id)
            return command_answer(MessageBody(f"{resource.title()} deleted successfully"), outcome)

    CatalogController.__name__ = f"{resource.title()}Controller"
    return CatalogController


CATALOG_CONTROLLERS = [catalog_controller(kind) for kind in KINDS.values()]
