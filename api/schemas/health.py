"""The body of `/healthz` and `/readyz`."""

from __future__ import annotations

import msgspec


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = {}
    consumers: dict[str, dict[str, float]] = {}
