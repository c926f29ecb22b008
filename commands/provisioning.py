"""Bucket provisioning: a process that reacts to WorkspaceCreated, never the HTTP handler.

The default backend is a directory per bucket under the data dir. Provisioning is idempotent
(an existing directory is fine, and the aggregate records only the first outcome), so redelivery
of the created event is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from commands.unit_of_work import CommandRunner, Context
from domain.errors import NotFound
from domain.events import SYSTEM_ACTOR, Recorded
from domain.workspace import WORKSPACE, RecordBucketFailed, RecordBucketProvisioned, WorkspaceCreated

log = logging.getLogger(__name__)


def bucket_name(workspace_id: str) -> str:
    """An S3-compatible name: lower-case letters, digits and hyphens, 3-63 characters."""
    return f"mm-{workspace_id.lower().replace('_', '-')}"[:63]


class DirectoryBuckets:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, name: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)


class BucketProvisioner:
    name = "bucket_provisioner"

    # Workspaces of one batch are provisioned side by side, so their outcomes share group commits
    # instead of waiting for one commit each.
    CONCURRENCY = 32

    def __init__(self, commands: CommandRunner, buckets: DirectoryBuckets) -> None:
        self.commands = commands
        self.buckets = buckets
        self._threads = ThreadPoolExecutor(self.CONCURRENCY, thread_name_prefix="provisioner")

    async def handle(self, conn: psycopg.AsyncConnection, batch: list[Recorded]) -> None:
        loop = asyncio.get_running_loop()
        created = [record for record in batch if isinstance(record.event, WorkspaceCreated)]
        await asyncio.gather(*(loop.run_in_executor(self._threads, self.provision, record) for record in created))

    def provision(self, record: Recorded) -> None:
        name = bucket_name(record.stream_id)
        try:
            self.buckets.create(name)
            command = RecordBucketProvisioned(s3_bucket=name)
        except OSError as error:
            log.warning("bucket %s for %s failed: %s", name, record.stream_id, error)
            command = RecordBucketFailed(reason=str(error))
        ctx = Context(org_id=record.meta.org_id, actor=SYSTEM_ACTOR, trace_id=record.meta.trace_id)
        try:
            self.commands.execute(WORKSPACE, record.stream_id, command, ctx)
        except NotFound:
            pass  # deleted before its bucket was ready: nothing left to record
