"""The catalog: apps, releases, endpoints and the other things deploys, actions and analytics point at.

One aggregate type for all nine kinds; a kind is data (its fields and their rules), not code.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from domain.errors import Conflict, Rules
from domain.events import AggregateType, DomainEvent, EventMeta
from domain.secrets import MASK, URL_FIELDS, carries_mask, masked_url


class Field(msgspec.Struct, frozen=True):
    type: str  # text | int | bool | url | choice | ref
    required: bool = False
    min_length: int = 1
    max_length: int = 200
    minimum: int = 0
    maximum: int = 2**53
    choices: tuple[str, ...] = ()
    ref: str | None = None  # the kind a ref points at
    default: Any = None


class Kind(msgspec.Struct, frozen=True):
    kind: str  # the path segment, plural: "apps"
    resource: str  # singular: "app" (permissions, errors, ids)
    fields: dict[str, Field]
    unique: tuple[str, str] | None = None  # (within this ref, this field is unique), e.g. version per app

    @property
    def id_field(self) -> str:
        return f"{self.resource}_id"

    @property
    def refs(self) -> dict[str, Field]:
        return {name: f for name, f in self.fields.items() if f.type == "ref"}


NAME = Field("text", required=True, max_length=100)
TEXT = Field("text", min_length=0, max_length=2000)
COUNT = Field("int", default=0)

KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("apps", "app", {"name": NAME, "description": TEXT}),
        Kind(
            "releases",
            "release",
            {
                "app_id": Field("ref", required=True, ref="apps"),
                "version": Field("text", required=True, max_length=100),
                "notes": Field("text", min_length=0, max_length=10_000),
            },
            unique=("app_id", "version"),
        ),
        Kind(
            "endpoints",
            "endpoint",
            {
                "app_id": Field("ref", required=True, ref="apps"),
                "name": NAME,
                "url": Field("url", max_length=2000),
                "total_stages": Field("int", minimum=1, maximum=1000, default=1),
            },
        ),
        Kind(
            "augmentations",
            "augmentation",
            {"app_id": Field("ref", required=True, ref="apps"), "name": NAME, "type": Field("text", max_length=100)},
        ),
        Kind("namespaces", "namespace", {"name": NAME, "app_id": Field("ref", ref="apps")}),
        Kind(
            "threads",
            "thread",
            {
                "namespace_id": Field("ref", required=True, ref="namespaces"),
                "title": Field("text", min_length=0, max_length=500),
            },
        ),
        Kind(
            "sources",
            "source",
            {
                "name": NAME,
                "type": Field("text", max_length=100),
                "namespace_id": Field("ref", ref="namespaces"),
                "status": Field("choice", choices=("pending", "indexed", "failed"), default="pending"),
                "chunks": COUNT,
                "tokens": COUNT,
                "bytes": COUNT,
            },
        ),
        Kind(
            "secrets",
            "secret",
            {"name": NAME, "type": Field("text", max_length=100), "is_active": Field("bool", default=True)},
        ),
        Kind("models", "model", {"name": NAME, "provider": Field("text", max_length=100)}),
    )
}

# Readers see url-typed fields masked as a whole (`domain.secrets.redacted`), found by name.
assert {name for k in KINDS.values() for name, f in k.fields.items() if f.type == "url"} <= URL_FIELDS

URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
# What RFC 3986 does not allow in a URL unencoded: whitespace, control characters, `"`, `<`, `>`, `\`, `^`, `` ` ``,
# `{`, `|`, `}`. Such characters also end a URL in free text for many readers (and for the masking of older versions).
_NOT_IN_URL = re.compile(r'[\x00-\x20\x7f-\x9f"<>\\^`{|}]|\s')
_TYPES = {"text": str, "url": str, "choice": str, "ref": str, "int": int, "bool": bool}
_TYPE_ERRORS = {
    str: ("string_type", "a valid string"),
    int: ("int_type", "a valid integer"),
    bool: ("bool_type", "a valid boolean"),
}


def _callable_url(value: str) -> bool:
    if not URL.fullmatch(value):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port  # raises for a port out of range
    except ValueError:
        return False
    return bool(parts.hostname) and (port is None or port > 0)


class CatalogItem(msgspec.Struct):
    item_id: str
    kind: str
    workspace_id: str
    org_id: str
    fields: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


class AddItem(msgspec.Struct, frozen=True):
    item_id: str
    kind: str
    workspace_id: str
    fields: dict[str, Any]


class ChangeItem(msgspec.Struct, frozen=True):
    changes: dict[str, Any]


class RemoveItem(msgspec.Struct, frozen=True):
    pass


class CatalogItemAdded(DomainEvent, frozen=True):
    item_id: str
    kind: str
    workspace_id: str
    fields: dict[str, Any]


class CatalogItemChanged(DomainEvent, frozen=True):
    changes: dict[str, Any]


class CatalogItemRemoved(DomainEvent, frozen=True):
    pass


EVENTS = (CatalogItemAdded, CatalogItemChanged, CatalogItemRemoved)

CatalogCommand = AddItem | ChangeItem | RemoveItem


def check_fields(kind: Kind, values: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """Validates fields against their kind; returns them with defaults filled in (unless partial)."""
    rules = Rules()
    for name, value in values.items():
        spec = kind.fields.get(name)
        if spec is None:
            message = (
                "Secret values are never stored: send only metadata (name, type, is_active)"
                if kind.kind == "secrets" and name == "value"
                else "Extra inputs are not permitted"
            )
            rules.fail(name, message, "extra_forbidden", None if name == "value" else value)
            continue
        if partial and spec.type == "ref":
            rules.fail(name, f"{name} cannot be changed after creation", "frozen_field", value)
            continue
        if value is None:
            if spec.required:
                rules.fail(name, "Field required", "missing", value)
            continue
        expected = _TYPES[spec.type]
        if type(value) is not expected:  # bool is an int in Python; JSON does not confuse them
            type_name, description = _TYPE_ERRORS[expected]
            rules.fail(name, f"Input should be {description}", type_name, value)
        elif expected is str:
            rules.text(name, value, min_length=spec.min_length, max_length=spec.max_length)
            if spec.type == "url" and value and _NOT_IN_URL.search(value):
                rules.fail(
                    name,
                    'Input should be a URL without spaces, control characters or any of " < > \\ ^ ` { | } '
                    "(percent-encode them)",
                    "url_parsing",
                    value,
                )
            elif spec.type == "url" and value and not _callable_url(value):
                rules.fail(
                    name,
                    "Input should be an http(s) URL with a host (and a port from 1 to 65535)",
                    "url_parsing",
                    value,
                )
            elif spec.type == "url" and value and carries_mask(value):
                rules.fail(
                    name,
                    f"The URL has masked parts ({MASK}): send the whole URL, or leave it out to keep the stored one",
                    "url_masked",
                    value,
                )
            if spec.type == "choice" and value not in spec.choices:
                rules.fail(
                    name,
                    f"Input should be one of: {', '.join(spec.choices)}",
                    "enum",
                    value,
                    expected=list(spec.choices),
                )
        elif expected is int:
            if value < spec.minimum:
                rules.fail(
                    name,
                    f"Input should be greater than or equal to {spec.minimum}",
                    "greater_than_equal",
                    value,
                    ge=spec.minimum,
                )
            elif value > spec.maximum:
                rules.fail(
                    name,
                    f"Input should be less than or equal to {spec.maximum}",
                    "less_than_equal",
                    value,
                    le=spec.maximum,
                )
    if not partial:
        for name, spec in kind.fields.items():
            if spec.required and name not in values:
                rules.fail(name, "Field required", "missing", None)
    rules.check()
    if partial:
        return dict(values)
    return {name: values.get(name, spec.default) for name, spec in kind.fields.items()}


def _unmasked(kind: Kind, state: CatalogItem, changes: dict[str, Any]) -> dict[str, Any]:
    """Answers show URLs masked, so a client that sends back what it read sends a mask: that keeps the stored URL
    (the client meant no change) rather than storing a mask that can no longer be called."""

    def sent_back(name: str, value: Any) -> bool:
        stored, spec = state.fields.get(name), kind.fields.get(name)
        return spec is not None and spec.type == "url" and isinstance(stored, str) and value == masked_url(stored)

    return {name: value for name, value in changes.items() if not sent_back(name, value)}


def decide(state: CatalogItem | None, command: CatalogCommand) -> list[DomainEvent]:
    if isinstance(command, AddItem):
        if state is not None:
            raise Conflict("Catalog item already exists", item_id=command.item_id)
        fields = check_fields(KINDS[command.kind], command.fields, partial=False)
        return [
            CatalogItemAdded(
                item_id=command.item_id, kind=command.kind, workspace_id=command.workspace_id, fields=fields
            )
        ]
    assert state is not None and not state.deleted, "the command layer answers 404 for a missing item"
    match command:
        case ChangeItem():
            changes = _unmasked(KINDS[state.kind], state, command.changes)
            return [CatalogItemChanged(changes=check_fields(KINDS[state.kind], changes, partial=True))]
        case RemoveItem():
            return [CatalogItemRemoved()]
    raise TypeError(f"not a catalog command: {command!r}")


def evolve(state: CatalogItem | None, event: DomainEvent, meta: EventMeta) -> CatalogItem:
    if isinstance(event, CatalogItemAdded):
        return CatalogItem(
            item_id=event.item_id,
            kind=event.kind,
            workspace_id=event.workspace_id,
            org_id=meta.org_id,
            fields=dict(event.fields),
            created_by=meta.actor.user_id or meta.actor.principal_id,
            created_at=meta.occurred_at,
            updated_at=meta.occurred_at,
        )
    assert state is not None
    match event:
        case CatalogItemChanged():
            return msgspec.structs.replace(state, fields={**state.fields, **event.changes}, updated_at=meta.occurred_at)
        case CatalogItemRemoved():
            return msgspec.structs.replace(state, deleted=True, updated_at=meta.occurred_at)
    raise TypeError(f"not a catalog event: {event!r}")


CATALOG = AggregateType("catalog", decide, evolve, creates=(AddItem,), events=EVENTS)
