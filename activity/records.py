"""The activity record, its ids, its verbs, and its JSON form (stored, and carried in batches)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

import msgspec

# What a record's `action` is: the API reference's six verbs.
ACTIONS = ("create", "read", "update", "delete", "execute", "trigger")
# What processes from before them recorded for deploys and undeploys (still arriving during a rolling upgrade).
LEGACY_ACTIONS = {"deploy": "create", "undeploy": "delete"}


class ActivityRecord(msgspec.Struct, omit_defaults=False):
    id: str
    org_id: str
    timestamp: datetime
    trace_id: str
    action: str
    status_code: int
    success: bool
    duration_ms: float
    user_id: str | None = None
    workspace_id: str | None = None
    app_id: str | None = None
    principal_type: str | None = None
    principal_id: str | None = None
    token_id: str | None = None
    token_type: str | None = None
    method: str | None = None
    path: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    error_code: str | None = None
    execution_id: str | None = None
    augmentation_id: str | None = None
    stages_completed: int | None = None
    total_stages: int | None = None
    token_usage: dict[str, int] | None = None
    metadata: dict[str, Any] = {}

    @property
    def tokens(self) -> int:
        return sum(self.token_usage.values()) if self.token_usage else 0


def new_id() -> str:
    """A record id in the order records are made: the time in microseconds, then 48 random bits. Each day's
    primary key index then grows at one edge instead of at a random page per record, which PostgreSQL spends
    less CPU on (BENCHMARKS.md, "Appendix: why the code is the way it is")."""
    return f"actv_{time.time_ns() // 1000:013x}{secrets.token_hex(6)}"


_encoder = msgspec.json.Encoder()
_batch_decoder = msgspec.json.Decoder(list[ActivityRecord])


def encode(record: ActivityRecord) -> bytes:
    return _encoder.encode(record)


def encode_batch(records: list[ActivityRecord]) -> bytes:
    return _encoder.encode(records)


def decode_batch(data: bytes) -> list[ActivityRecord]:
    return _batch_decoder.decode(data)
