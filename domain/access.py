"""Roles and the permissions they grant. A permission reads `<resource>:<action>`, e.g. `workspace:create`."""

from __future__ import annotations

ROLES = ("owner", "admin", "member", "viewer", "auditor")
PRINCIPAL_TYPES = ("user", "service")

# Resources every member may change and every viewer may read. Later groups add theirs here.
RESOURCES = (
    "workspace",
    "environment",
    "deployment",
    "app",
    "release",
    "endpoint",
    "augmentation",
    "namespace",
    "thread",
    "source",
    "secret",
    "model",
    "action",
)
_READ = frozenset(f"{r}:read" for r in RESOURCES)
_WRITE = frozenset({f"{r}:{a}" for r in RESOURCES for a in ("create", "update", "delete")} | {"action:trigger"})
_TOKENS = frozenset({"token:create", "token:read", "token:delete"})
_OVERSIGHT = frozenset({"activity:read", "audit:read"})

GRANTS: dict[str, frozenset[str]] = {
    "owner": _READ | _WRITE | _TOKENS | _OVERSIGHT,
    "admin": _READ | _WRITE | _TOKENS | _OVERSIGHT,
    "member": _READ | _WRITE,
    "viewer": _READ,
    "auditor": _READ | _OVERSIGHT,
}


def allows(role: str, permission: str) -> bool:
    return permission in GRANTS.get(role, frozenset())


def may_issue(issuer_role: str, role: str) -> bool:
    """Only an owner hands out owner tokens; an admin may issue every other role."""
    return issuer_role == "owner" or (issuer_role == "admin" and role != "owner")
