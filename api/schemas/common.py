"""What every resource's wire types share: the base of request bodies, a bare message, and the schema plugin."""

from __future__ import annotations

import msgspec
from litestar._openapi.schema_generation import SchemaCreator  # no public home for the Struct schema plugin
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition


class RequestBody(msgspec.Struct, forbid_unknown_fields=True):
    """Every request body refuses fields it does not know (422), so a client's typo is not silently dropped."""


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schemas, saying `additionalProperties: false` for Structs that refuse unknown fields."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if msgspec.inspect.type_info(field_definition.type_).forbid_unknown_fields:  # type: ignore[union-attr]
            schema.additional_properties = False
        return schema


class MessageBody(msgspec.Struct):
    message: str
