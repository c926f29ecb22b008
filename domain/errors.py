"""Errors a decision can end in. The API maps each to one HTTP answer in one place."""

from __future__ import annotations

import re
from typing import Any

import msgspec

# NUL cannot be stored in PostgreSQL text; the other C0 controls (bar tab and newlines) have no business
# in names either.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class FieldError(msgspec.Struct, frozen=True):
    """One invalid input, in the shape of the seeds' 422 `detail` items (minus the location prefix)."""

    field: tuple[str, ...]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] = {}


class DomainError(Exception):
    pass


class ValidationFailed(DomainError):
    """`source` is where the invalid input came from: body, query, path or header."""

    def __init__(self, errors: list[FieldError], source: str = "body") -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.field))}: {e.msg}" for e in errors))
        self.errors = errors
        self.source = source


class NotFound(DomainError):
    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(f"{resource_type} {resource_id!r} was not found")
        self.resource_type = resource_type
        self.resource_id = resource_id


class Conflict(DomainError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Rules:
    """Collects every broken rule of one command, so the caller hears about all of them at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, field: str | tuple[str, ...], msg: str, type_: str, value: Any = None, **ctx: Any) -> None:
        location = (field,) if isinstance(field, str) else field
        self.errors.append(FieldError(location, msg, type_, value, ctx))

    def text(self, field: str | tuple[str, ...], value: str | None, *, min_length: int, max_length: int) -> None:
        if value is None:
            return
        if CONTROL_CHARACTERS.search(value):
            self.fail(field, "String must not contain control characters", "string_pattern_mismatch", value)
        elif len(value) < min_length:
            self.fail(
                field,
                f"String should have at least {min_length} character{'s' * (min_length != 1)}",
                "string_too_short",
                value,
                min_length=min_length,
            )
        elif len(value) > max_length:
            self.fail(
                field,
                f"String should have at most {max_length} characters",
                "string_too_long",
                value,
                max_length=max_length,
            )

    def check(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


class Forbidden(DomainError):
    """The caller lacks `permission` (e.g. `workspace:create`, or `token:create:owner` for a role)."""

    def __init__(self, permission: str) -> None:
        super().__init__(permission)
        self.permission = permission
