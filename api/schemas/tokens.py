"""Org tokens on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from api.schemas.common import RequestBody


class TokenCreate(RequestBody):
    name: str
    role: str
    user_id: str | None = None
    principal_type: str = "user"


class Token(msgspec.Struct):
    token_id: str
    name: str
    role: str
    user_id: str | None
    principal_type: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    is_active: bool


class TokenIssued(msgspec.Struct):
    token_id: str
    token: Annotated[str, msgspec.Meta(description="The secret bearer token. Shown once; only its hash is kept.")]
    name: str
    role: str
    user_id: str | None
    principal_type: str
    created_at: datetime


class TokenList(msgspec.Struct):
    total: int
    has_more: bool
    next_cursor: str | None
    tokens: list[Token]
