"""The error envelope and the 422 body, as every `/v1/orgs` operation documents them."""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorBody(msgspec.Struct):
    error: str
    message: str
    details: dict[str, Any]
    timestamp: str
    status_code: int


class ValidationErrorItem(msgspec.Struct):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] = {}


class ValidationErrorBody(msgspec.Struct):
    detail: list[ValidationErrorItem]
