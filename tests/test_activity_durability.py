"""The record of a request that changed state is durable by the time its answer arrives: a kill -9 of the
API process right after a 201 loses no record, with NATS up and with NATS down."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from activity.publisher import ActivityPublisher
from activity.records import ActivityRecord, new_id
from activity.transport import ENCODING, activity_subject, encoded, ensure_activity_stream
from mechamental.embedded import free_port
from tests.conftest import ROOT_TOKEN, process_environment
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
                ActivityRecord(
                    id=new_id(), org_id=org, timestamp=datetime.now(UTC), trace_id="t", action="create",
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


class Publisher:
    """Publishes activity batches (1 to 4 records, one JetStream message each) every few milliseconds from a thread
    of its own, as API processes do; `published` holds every record id JetStream acked."""

    def __init__(self, nats_url: str, stream: str, prefix: str, org: str) -> None:
        self.nats_url, self.stream, self.prefix, self.org = nats_url, stream, prefix, org
        self.published: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        import nats

        client = await nats.connect(self.nats_url)
        js = client.jetstream(timeout=5)
        await ensure_activity_stream(js, self.stream, self.prefix)
        i = 0
        while not self._stop.is_set():
            records = [
                ActivityRecord(
                    id=new_id(), org_id=self.org, timestamp=datetime.now(UTC), trace_id="t", action="read",
                    status_code=200, success=True, duration_ms=1.0, method="GET", path=f"/{i}/{n}",
                )  # fmt: skip
                for n in range(1 + i % 4)
            ]
            headers = {"Nats-Msg-Id": f"{records[0].id}:{len(records)}", ENCODING: "zlib"}
            await js.publish(activity_subject(self.prefix), encoded(records), headers=headers)
            self.published.extend(record.id for record in records)
            i += 1
            await asyncio.sleep(0.005)
        await client.close()

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def __exit__(self, *_) -> None:
        self.stop()


def stored_ids(database_url: str, org: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        query = "SELECT id, count(*) FROM activity WHERE org_id = %s GROUP BY id"
        return dict(conn.execute(query, (org,)).fetchall())


def test_records_in_jetstream_are_stored_exactly_once_through_kill_9s_of_the_consumer(server_urls, tmp_path):
    # A consumer killed between a fetch and its commit left messages that the next one's ack (AckPolicy.ALL) of a
    # later message covered: never delivered again, never stored.
    org = "org-" + secrets.token_hex(6)
    with process_environment(server_urls, tmp_path, "actkill") as env:
        subprocess.run([*CLI, "migrate"], env=env, check=True, capture_output=True, timeout=60)
        stream = f"{env['MECHAMENTAL_STREAM']}_ACTIVITY"
        log = open(tmp_path / "projector.log", "ab")  # noqa: SIM115 - the processes own it

        def projector() -> subprocess.Popen:
            return subprocess.Popen([*CLI, "projector"], env=env, stdout=log, stderr=log)

        process = projector()
        try:
            with Publisher(env["MECHAMENTAL_NATS_URL"], stream, env["MECHAMENTAL_SUBJECT_PREFIX"], org) as publisher:
                for kill in range(4):
                    seen = len(stored_ids(env["MECHAMENTAL_DATABASE_URL"], org))
                    eventually(  # this projector stores, so it has fetched: kill it while records flow
                        lambda seen=seen: len(stored_ids(env["MECHAMENTAL_DATABASE_URL"], org)) > seen + 20,
                        timeout=60, interval=0.05, what=f"the projector to store records before kill {kill}",
                    )  # fmt: skip
                    time.sleep(0.05 + 0.07 * kill)
                    process.send_signal(signal.SIGKILL)
                    process.wait(10)
                    process = projector()
                time.sleep(1)  # the last projector acks (old) or stores (new) what comes after its start
            published = publisher.published
            assert len(published) > 200
            eventually(
                lambda: len(stored_ids(env["MECHAMENTAL_DATABASE_URL"], org)),
                until=lambda count: count >= len(published),
                timeout=45,  # past JetStream's ack wait (30 s): whatever it would deliver again has come
                what=f"all {len(published)} records stored",
            )
            stored = stored_ids(env["MECHAMENTAL_DATABASE_URL"], org)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    assert set(stored) == set(published) and set(stored.values()) == {1}
