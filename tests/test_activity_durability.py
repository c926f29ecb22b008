"""The record of a request that changed state is durable by the time its answer arrives: a kill -9 of the
API process right after a 201 loses no record, with NATS up and with NATS down."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from mechamental.embedded import free_port
from pipeline.activity import ActivityPublisher
from projections import activity
from tests.conftest import ROOT_TOKEN
from tests.support import eventually

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "mechamental.cli"]


def api_process(settings, tmp_path, nats_url: str | None = None) -> tuple[subprocess.Popen, str]:
    """An API process of its own on the session's database and streams; the session's in-process projector
    stores the activity it publishes."""
    port = free_port()
    env = {
        **os.environ,
        "MECHAMENTAL_DATABASE_URL": settings.database_url,
        "MECHAMENTAL_NATS_URL": nats_url or settings.nats_url,
        "MECHAMENTAL_ROOT_TOKEN": ROOT_TOKEN,
        "MECHAMENTAL_STREAM": settings.stream,
        "MECHAMENTAL_SUBJECT_PREFIX": settings.subject_prefix,
        "MECHAMENTAL_DATA_DIR": str(tmp_path),
        "MECHAMENTAL_PORT": str(port),
        "MECHAMENTAL_LOG_LEVEL": "WARNING",
    }
    log = open(tmp_path / f"api-{port}.log", "ab")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen([*CLI, "api"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, "the api process exited"
        return httpx.get(base + "/healthz").status_code == 200

    eventually(healthy, timeout=60, interval=0.1, what="the api process to come up", ignoring=(httpx.TransportError,))
    return process, base


def records_of(settings, org: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(settings.database_url) as conn:
        query = (
            "SELECT r->>'method', r->>'path', (r->>'status_code')::int FROM "
            "(SELECT id, convert_from(record, 'UTF8')::json AS r FROM activity WHERE org_id = %s) AS a ORDER BY id"
        )
        return conn.execute(query, (org,)).fetchall()


def wait_records(settings, org: str, count: int, timeout: float = 20) -> list[tuple[str, str, int]]:
    return eventually(
        lambda: records_of(settings, org),
        until=lambda rows: len(rows) >= count,
        timeout=timeout,
        what=f"{count} records",
    )


@pytest.mark.parametrize("nats", ["up", "down"])
def test_a_mutating_requests_record_survives_a_kill_9_right_after_its_answer(system, settings, tmp_path, nats):
    # NATS down: an address where nothing listens, so the record must go straight to PostgreSQL.
    process, base = api_process(settings, tmp_path, None if nats == "up" else f"nats://127.0.0.1:{free_port()}")
    org = "org-" + secrets.token_hex(6)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ROOT_TOKEN}"}, timeout=30) as client:
            started = time.monotonic()
            created = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "survivor"})
            process.send_signal(signal.SIGKILL)
            answered_in = time.monotonic() - started
        assert created.status_code == 201
    finally:
        process.kill()
        process.wait(10)
    rows = wait_records(settings, org, 1)
    assert rows == [("POST", f"/v1/orgs/{org}/workspaces", 201)]
    assert answered_in < 5  # a NATS that is down costs a direct write, not a hang


def test_concurrent_durable_records_share_a_message_and_each_is_stored_once(settings):
    async def main() -> list[tuple[str, int]]:
        async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
            # Without NATS every group is written straight to PostgreSQL, at once.
            publisher = ActivityPublisher(pool, lambda: None, stream="unused", prefix="unused")
            org = "org-" + secrets.token_hex(6)
            records = [
                activity.ActivityRecord(
                    id=activity.new_id(), org_id=org, timestamp=datetime.now(UTC), trace_id="t", action="create",
                    status_code=201, success=True, duration_ms=1.0, method="POST", path=f"/{i}",
                )  # fmt: skip
                for i in range(20)
            ]
            await asyncio.gather(*(publisher.record_durably(record) for record in records))
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT id, count(*) FROM activity WHERE org_id = %s GROUP BY id", (org,))
                stored = await cursor.fetchall()
            assert publisher.stored_directly == 20
            return stored

    stored = asyncio.run(main())
    assert len(stored) == 20 and all(count == 1 for _, count in stored)
