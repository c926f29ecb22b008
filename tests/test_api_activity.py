"""Activity through HTTP: a known mix of requests and executions in two orgs, then every feed, filter
and summary must count exactly that mix."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import msgspec
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from activity.consumer import ActivityConsumer, read_position
from activity.publisher import ActivityPublisher
from activity.queries import summary
from activity.records import ActivityRecord, encode_batch, new_id
from activity.store import MAX_INDEXED_LENGTH, drop_expired, store
from tests.conftest import as_token, assert_422, assert_envelope, issue_token
from tests.support import eventually, eventually_async

RECORD_KEYS = {
    "id",
    "timestamp",
    "trace_id",
    "user_id",
    "workspace_id",
    "app_id",
    "principal_type",
    "principal_id",
    "token_id",
    "token_type",
    "method",
    "path",
    "resource_type",
    "resource_id",
    "action",
    "status_code",
    "success",
    "error_code",
    "duration_ms",
    "execution_id",
    "augmentation_id",
    "stages_completed",
    "total_stages",
    "token_usage",
    "metadata",
}


def stored(settings, org: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM activity WHERE org_id = %s", (org,)).fetchone()[0]


def wait_stored(settings, org: str, count: int) -> None:
    eventually(lambda: stored(settings, org), until=lambda n: n >= count, timeout=20, what=f"{count} records stored")
    time.sleep(0.2)  # then no more: a record that should not exist cannot be waited for, only given time to appear
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT action, resource_type, convert_from(record, 'UTF8') FROM activity WHERE org_id = %s", (org,)
        ).fetchall()
    assert len(rows) == count, [(a, r) for a, r, _ in rows]  # and not more: each request exactly once


class TokenTarget(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"stages_completed": 2, "total_stages": 2, "token_usage": {"input": 10, "output": 5}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def token_target():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenTarget)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/run"
    server.shutdown()


@pytest.fixture()
def mix(api, system, settings, token_target):
    """Org A: root issues alice's token, alice makes 10 requests (4 fail), one execution uses 15 tokens.
    Org B: root issues bob's token, bob makes 2 requests."""
    org_a, org_b = "org-" + secrets.token_hex(5), "org-" + secrets.token_hex(5)
    alice = issue_token(api, org_a, "owner", user_id="alice")
    bob = issue_token(api, org_b, "owner", user_id="bob")
    traces = []

    def call(client, method, path, **kwargs):
        trace = secrets.token_hex(16)
        traces.append(trace)
        headers = {"traceparent": f"00-{trace}-{secrets.token_hex(8)}-01", "User-Agent": "mix-test"}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.headers["X-Trace-Id"] == trace
        return response

    with as_token(system, alice) as a, as_token(system, bob) as b:
        ws = call(a, "POST", f"/v1/orgs/{org_a}/workspaces", json={"name": "w"}).json()["workspace_id"]
        base = f"/v1/orgs/{org_a}/workspaces/{ws}"
        app_id = call(a, "POST", f"{base}/apps", json={"name": "bot"}).json()["app_id"]
        namespace = call(a, "POST", f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
        endpoint = call(
            a, "POST", f"{base}/endpoints", json={"app_id": app_id, "name": "llm", "url": token_target}
        ).json()["endpoint_id"]
        action = call(
            a,
            "POST",
            f"{base}/apps/{app_id}/actions",
            json={"name": "go", "endpoint_id": endpoint, "namespace_id": namespace},
        ).json()["action_id"]
        assert call(a, "POST", f"{base}/apps/{app_id}/actions/{action}/trigger", json={}).status_code == 202
        assert call(a, "GET", f"{base}/apps/nope").status_code == 404
        assert call(a, "POST", f"/v1/orgs/{org_a}/workspaces", json={"name": ""}).status_code == 422
        assert call(a, "GET", f"/v1/orgs/{org_a}/workspaces/ws_missing").status_code == 404
        assert call(a, "DELETE", f"{base}/environments/env_missing").status_code == 404
        call(b, "POST", f"/v1/orgs/{org_b}/workspaces", json={"name": "theirs"})
        call(b, "GET", f"/v1/orgs/{org_b}/workspaces")
    wait_stored(settings, org_a, 1 + 10 + 1)
    wait_stored(settings, org_b, 3)
    return {
        "a": org_a,
        "b": org_b,
        "alice": alice,
        "bob": bob,
        "ws": ws,
        "app": app_id,
        "endpoint": endpoint,
        "action": action,
        "traces": traces,
    }


def test_summaries_count_exactly_the_mix(system, mix):
    with as_token(system, mix["alice"]) as a:
        org = a.get(f"/v1/orgs/{mix['a']}/activity/summary").json()
        assert set(org) == {
            "total_requests",
            "successful_requests",
            "failed_requests",
            "avg_duration_ms",
            "total_tokens_used",
            "by_action",
            "by_resource",
            "start_time",
            "end_time",
        }
        assert (org["total_requests"], org["failed_requests"], org["total_tokens_used"]) == (12, 4, 15), org
        assert org["by_action"] == {"create": 7, "trigger": 1, "read": 2, "delete": 1, "execute": 1}
        assert org["by_resource"]["token"] == 1 and org["by_resource"]["endpoint"] == 2
        workspace = a.get(f"/v1/orgs/{mix['a']}/workspaces/{mix['ws']}/activity/summary", params={"hours": 1}).json()
        assert (workspace["total_requests"], workspace["total_tokens_used"]) == (8, 15), workspace
        user = a.get(f"/v1/orgs/{mix['a']}/users/alice/activity/summary").json()
        assert (user["total_requests"], user["failed_requests"]) == (10, 4), user
        endpoint = a.get(
            f"/v1/orgs/{mix['a']}/workspaces/{mix['ws']}/apps/{mix['app']}/endpoints/{mix['endpoint']}/activity/summary"
        ).json()
        assert (endpoint["total_requests"], endpoint["total_tokens_used"], endpoint["by_action"]) == (
            1,
            15,
            {"execute": 1},
        )  # its creation was a POST on the collection: no endpoint id yet
        mine = a.get(f"/v1/orgs/{mix['a']}/me/activity/summary").json()
        assert mine["total_requests"] >= 10


def test_feeds_filter_page_and_never_leak(system, mix):
    with as_token(system, mix["alice"]) as a:
        feed = a.get(f"/v1/orgs/{mix['a']}/activity", params={"limit": 200}).json()
        records = feed["activities"]
        assert all(set(r) == RECORD_KEYS for r in records)
        timestamps = [r["timestamp"] for r in records]
        assert timestamps == sorted(timestamps, reverse=True)
        by_trace = {}
        for r in records:
            by_trace.setdefault(r["trace_id"], []).append(r)
        assert all(len(by_trace[t]) == 1 for t in mix["traces"] if by_trace.get(t))
        assert sum(1 for t in mix["traces"] if t in by_trace) == 10  # alice's ten, none of bob's
        text = json.dumps(feed)
        assert mix["alice"].split(".")[1] not in text and mix["bob"].split(".")[1] not in text
        assert mix["b"] not in text and "authorization" not in text.lower()
        failed = [r for r in records if r["trace_id"] in mix["traces"] and not r["success"]]
        assert sorted(r["error_code"] for r in failed) == [
            "RESOURCE_NOT_FOUND",
            "RESOURCE_NOT_FOUND",
            "RESOURCE_NOT_FOUND",
            "VALIDATION_ERROR",
        ]
        execution = next(r for r in records if r["action"] == "execute")
        assert (
            execution["resource_type"],
            execution["resource_id"],
            execution["token_usage"],
            execution["stages_completed"],
        ) == ("endpoint", mix["endpoint"], {"input": 10, "output": 5}, 2)

        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = a.get(f"/v1/orgs/{mix['a']}/workspaces/{mix['ws']}/activity", params=params).json()
            seen += [r["id"] for r in page["activities"]]
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        assert len(seen) == len(set(seen)) >= 8

        ws = f"/v1/orgs/{mix['a']}/workspaces/{mix['ws']}"
        search = a.get(f"{ws}/activity/search", params={"status": "error"}).json()
        assert {r["status_code"] for r in search["activities"]} == {404}  # the 422 was outside this workspace
        assert a.get(f"{ws}/activity/search", params={"action": "trigger"}).json()["total"] == 1
        assert a.get(f"{ws}/activity/actions/execute").json()["total"] == 1
        assert a.get(f"{ws}/resources/{mix['action']}/activity").json()["total"] >= 1
        assert a.get(f"{ws}/apps/{mix['app']}/activity").json()["total"] == 3  # create action, trigger, execute
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert a.get(f"/v1/orgs/{mix['a']}/activity", params={"start_time": future}).json()["total"] == 0
        assert (
            a.get(f"/v1/orgs/{mix['a']}/users/alice/activity", params={"workspace_id": mix["ws"]}).json()["total"] >= 7
        )
        assert a.get(f"/v1/orgs/{mix['a']}/me/activity").json()["total"] >= 10
    with as_token(system, mix["bob"]) as b:
        theirs = b.get(f"/v1/orgs/{mix['b']}/activity").json()
        assert theirs["total"] >= 3 and all(r["user_id"] in ("bob", "root") for r in theirs["activities"])
        assert_envelope(b.get(f"/v1/orgs/{mix['a']}/activity"), 403, "FORBIDDEN")


def test_who_may_read_which_feed(api, system, mix):
    org = mix["a"]
    with as_token(system, issue_token(api, org, "member")) as member:
        body = assert_envelope(member.get(f"/v1/orgs/{org}/activity"), 403, "FORBIDDEN")
        assert body["details"]["required_permission"] == "activity:read"
        assert member.get(f"/v1/orgs/{org}/workspaces/{mix['ws']}/activity").status_code == 200
    with as_token(system, issue_token(api, org, "auditor")) as auditor:
        assert auditor.get(f"/v1/orgs/{org}/users/alice/activity").status_code == 200
    with as_token(system, issue_token(api, org, "viewer")) as viewer:
        assert viewer.get(f"/v1/orgs/{org}/me/activity").status_code == 200
        assert_envelope(viewer.get(f"/v1/orgs/{org}/activity/summary"), 403, "FORBIDDEN")


def test_bad_query_input_is_422(api, mix):
    org, ws = mix["a"], f"/v1/orgs/{mix['a']}/workspaces/{mix['ws']}"
    assert_422(api.get(f"/v1/orgs/{org}/activity", params={"start_time": "yesterday"}), ["query", "start_time"])
    assert_422(
        api.get(
            f"/v1/orgs/{org}/activity",
            params={"start_time": "2030-01-02T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"},
        ),
        ["query", "end_time"],
    )
    assert_422(api.get(f"/v1/orgs/{org}/activity/summary", params={"hours": 0}), ["query", "hours"])
    assert_422(api.get(f"/v1/orgs/{org}/activity/summary", params={"hours": 169}), ["query", "hours"])
    assert_422(api.get(f"{ws}/activity/search", params={"status": "meh"}), ["query", "status"])
    assert_422(api.get(f"{ws}/activity/actions/dance"), ["path", "action"])
    assert_422(api.get(f"/v1/orgs/{org}/activity", params={"cursor": "nope"}), ["query", "cursor"])


def test_a_request_with_a_nul_in_its_path_is_recorded_and_stops_nothing(api, settings):
    """PostgreSQL's text refuses NUL. A record storing one as it came failed its batch at every retry, and no
    activity was stored after it, for any org."""
    org = "org-" + secrets.token_hex(4)
    assert_422(api.get(f"/v1/orgs/{org}/workspaces/a%00b"), ["path", "workspace_id"])
    assert api.get(f"/v1/orgs/{org}/workspaces").status_code == 200
    wait_stored(settings, org, 2)
    with psycopg.connect(settings.database_url) as conn:
        (resource_id,) = conn.execute(
            "SELECT resource_id FROM activity WHERE org_id = %s AND resource_id IS NOT NULL", (org,)
        ).fetchone()
    assert resource_id == "a\ufffdb"


def test_a_request_naming_a_long_id_is_recorded_and_stops_nothing(api, system, settings):
    """An index entry past about 2.7 kB is refused, and a path may name any id, even one the token may not
    touch (answered 403 or 422, still recorded). Stored whole, such a record failed its batch at every retry."""
    org = "org-" + secrets.token_hex(4)
    long_id = "w" * 2100
    with as_token(system, issue_token(api, org, "viewer")) as viewer:
        assert viewer.delete(f"/v1/orgs/{org}/workspaces/{long_id}").status_code in (403, 422)
    assert api.get(f"/v1/orgs/{org}/workspaces/{long_id}").status_code in (404, 422)
    assert api.get(f"/v1/orgs/{org}/workspaces").status_code == 200
    wait_stored(settings, org, 4)  # and the token's issue
    with psycopg.connect(settings.database_url) as conn:
        lengths = conn.execute(
            "SELECT length(workspace_id), length(resource_id) FROM activity "
            "WHERE org_id = %s AND workspace_id IS NOT NULL",
            (org,),
        ).fetchall()
    assert lengths == [(MAX_INDEXED_LENGTH, MAX_INDEXED_LENGTH)] * 2


def test_without_nats_records_go_straight_to_postgres_and_are_stored_once(settings):
    org = "org-" + secrets.token_hex(5)
    now = datetime.now(UTC)
    records = [
        ActivityRecord(
            id=f"actv_{i}_{org}",
            org_id=org,
            timestamp=now,
            trace_id="t",
            action="read",
            status_code=200,
            success=True,
            duration_ms=2.0,
        )
        for i in range(3)
    ]

    async def scenario():
        async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
            publisher = ActivityPublisher(pool, lambda: None, stream="none", prefix="none")
            for record in records:
                publisher.record(record)
            await publisher.flush()
            for record in records:  # the same records again (a retry after a crash, say)
                publisher.record(record)
            await publisher.flush()
            async with pool.connection() as conn:
                return await summary(conn, org, "org", org, 1, datetime.now(UTC))

    result = asyncio.run(scenario())
    assert stored(settings, org) == 3 and result.total_requests == 3


def test_expired_partitions_are_dropped(settings):
    async def scenario():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            old = datetime(2001, 1, 1, tzinfo=UTC)
            async with conn.transaction():
                await store(
                    conn,
                    [
                        ActivityRecord(
                            id="actv_old",
                            org_id="org-old",
                            timestamp=old,
                            trace_id="t",
                            action="read",
                            status_code=200,
                            success=True,
                            duration_ms=1.0,
                        )
                    ],
                )
            return await drop_expired(conn, 90, datetime.now(UTC).date())

    assert "activity_20010101" in asyncio.run(scenario())


class FakeMessage:
    """A JetStream message carrying a flush of activity records, at a stream sequence."""

    def __init__(self, records: list[ActivityRecord], sequence: int = 1) -> None:
        self.data = encode_batch(records)
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=sequence))


class FakeSubscription:
    """Hands over these answers, one fetch after another, then times out: what real JetStream will not do on
    demand, a fetch that answers with no message at all."""

    def __init__(self, answers: list[list[FakeMessage]]) -> None:
        self.answers = answers

    async def fetch(self, batch: int, timeout: float) -> list[FakeMessage]:
        if not self.answers:
            await asyncio.sleep(0.01)  # a fetch that times out takes a while, as a real one would
            raise TimeoutError
        return self.answers.pop(0)


def records_of(org: str, ids: list[str], at: datetime | None = None) -> list[ActivityRecord]:
    return [
        ActivityRecord(
            id=i, org_id=org, timestamp=at or datetime.now(UTC), trace_id="t", action="read", status_code=200,
            success=True, duration_ms=1.0,
        )
        for i in ids
    ]  # fmt: skip


def test_the_consumer_gathers_flushes_for_a_while_and_survives_empty_fetches():
    """nats-py's fetch may answer with no message at all; the consumer then has nothing to store."""
    consumer = ActivityConsumer(None, lambda: None, stream="s", prefix="p", linger=0.5)
    assert asyncio.run(consumer._gather(FakeSubscription([]), [])) == ([], None)
    first, second = FakeMessage(records_of("o", ["a", "b"]), 7), FakeMessage(records_of("o", ["c"]), 8)
    records, last = asyncio.run(consumer._gather(FakeSubscription([[], [second], []]), [first]))
    assert [r.id for r in records] == ["a", "b", "c"] and last == 8  # the position stored with them


def test_the_consumer_takes_messages_only_in_sequence_and_reads_again_after_a_gap():
    """A message delivered again is skipped; one past a skipped sequence ends the gathering, and the consumer
    subscribes again from its stored position, so nothing between is passed over."""
    consumer = ActivityConsumer(None, lambda: None, stream="s", prefix="p", linger=0.5)
    messages = [FakeMessage(records_of("o", ["a"]), 3), FakeMessage(records_of("o", ["a"]), 3),
                FakeMessage(records_of("o", ["b"]), 4), FakeMessage(records_of("o", ["d"]), 6)]  # fmt: skip
    records, last = asyncio.run(consumer._gather(FakeSubscription([]), messages))
    assert [r.id for r in records] == ["a", "b"] and last == 4 and consumer._gap


class PacedSubscription:
    """A flush of `size` records every `every` seconds, for ever."""

    def __init__(self, size: int, every: float) -> None:
        self.size, self.every, self.made, self.sent = size, every, 0, 0

    async def fetch(self, batch: int, timeout: float) -> list[FakeMessage]:
        if timeout < self.every:
            await asyncio.sleep(timeout)  # pacing the load: the timing is what the test is about
            raise TimeoutError
        await asyncio.sleep(self.every)
        self.made += self.size
        self.sent += 1
        return [FakeMessage(records_of("o", [f"r{self.made - n}" for n in range(self.size)]), self.sent)]


@pytest.mark.parametrize(("size", "busy"), [(200, True), (5, False)])
def test_a_busy_consumer_gathers_for_longer_a_quiet_one_does_not(size, busy):
    """Busy (500 records within the linger of 0.1 s), it gathers for up to a second, so records share their
    rollup rows; quiet, it stores what came within the linger."""
    consumer = ActivityConsumer(None, lambda: None, stream="s", prefix="p", linger=0.1, busy_linger=1.0,
                                busy_records=500, batch_records=1_000_000)  # fmt: skip
    subscription = PacedSubscription(size, every=0.01)
    started = time.monotonic()
    records, last = asyncio.run(consumer._gather(subscription, []))
    took = time.monotonic() - started
    assert len(records) == subscription.made and last is not None
    assert (took > 0.5) is busy, (took, len(records))


def test_record_ids_sort_in_the_order_they_were_made():
    ids = [new_id() for _ in range(1000)]
    times = [i[5:18] for i in ids]  # microseconds; ids of one microsecond differ in their random end
    assert sorted(times) == times and len(set(ids)) == len(ids)
    assert all(i.startswith("actv_") for i in ids)


def consume_published(settings, org: str, batches: list[list[ActivityRecord]], stored_count: int,
                      prepare=lambda consumer: None) -> None:  # fmt: skip
    """Publishes the batches (plain JSON, as an older API would) to a JetStream stream of their own, then runs
    the real consumer until `stored_count` records of `org` are stored, and checks that its stored position is
    the stream's last message and that it left no consumer behind."""
    import nats

    from activity.transport import activity_subject, ensure_activity_stream

    tag = secrets.token_hex(4)
    stream, prefix = f"ACTIVITY_TEST_{tag}", f"t{tag}"

    async def scenario() -> None:
        client = await nats.connect(settings.nats_url)
        js = client.jetstream()
        await ensure_activity_stream(js, stream, prefix)
        try:
            for batch in batches:
                await js.publish(activity_subject(prefix), encode_batch(batch))
            async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
                consumer = ActivityConsumer(pool, lambda: client, stream=stream, prefix=prefix, linger=0.0)
                prepare(consumer)
                stop = asyncio.Event()
                task = asyncio.create_task(consumer._consume(stop))  # leadership is the session projector's
                try:
                    await eventually_async(
                        lambda: stored(settings, org),
                        until=lambda n: n >= stored_count,
                        interval=0.1,
                        what=f"{stored_count} records stored",
                    )
                finally:
                    stop.set()
                    await task
                async with pool.connection() as conn:
                    position = await read_position(conn, stream)
                assert position is not None and position[1] == (await js.stream_info(stream)).state.last_seq
                assert await js.consumers_info(stream) == []
        finally:
            await js.delete_stream(stream)
            await client.close()

    asyncio.run(scenario())


def test_a_batch_that_fails_to_store_is_stored_before_anything_more_is_fetched(settings, caplog):
    """The position stored with a batch covers every message before it, so a batch given up on would never be
    read again: the consumer stores the same batch again until it is in. Here, through real JetStream and
    PostgreSQL, the first try fails for real: the consumer is told a day's partition exists when it does not."""
    import logging

    caplog.set_level(logging.INFO, logger="activity")
    org = "org-" + secrets.token_hex(6)
    day = datetime(2090, 1, 1, tzinfo=UTC) + timedelta(days=secrets.randbelow(3000))
    partition = f"activity_{day:%Y%m%d}"
    first = records_of(org, [f"actv_{org}_1", f"actv_{org}_2"], at=day)
    second = records_of(org, [f"actv_{org}_3"])

    def believe_the_partition_exists(consumer) -> None:
        consumer._known_days.add(day.date())  # so the first insert fails

    try:
        consume_published(settings, org, [first, second], 3, believe_the_partition_exists)
        assert 'no partition of relation "activity" found' in caplog.text  # the first try did fail
        assert stored(settings, org) == 3
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {partition}")


def test_a_record_storage_refuses_is_left_out_and_its_batch_is_stored(settings, caplog):
    """A record the database cannot take (here a token count past bigint, from a writer that did not bound it)
    failed its whole batch at every retry, and the consumer stored nothing after it, for any org. Through real
    JetStream and PostgreSQL: the batch is stored one record at a time, and only that record is left out."""
    import logging

    caplog.set_level(logging.INFO, logger="activity")
    org = "org-" + secrets.token_hex(6)
    good_1, poison, good_2 = records_of(org, [f"actv_{org}_1", f"actv_{org}_poison", f"actv_{org}_2"])
    poison = msgspec.structs.replace(poison, token_usage={"input": 2**63})
    later = records_of(org, [f"actv_{org}_3"])

    consume_published(settings, org, [[good_1, poison, good_2], later], 3)
    with psycopg.connect(settings.database_url) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM activity WHERE org_id = %s", (org,))}
        (requests,) = conn.execute(
            "SELECT sum(requests) FROM activity_hourly WHERE org_id = %s AND scope = 'org'", (org,)
        ).fetchone()
    assert ids == {f"actv_{org}_1", f"actv_{org}_2", f"actv_{org}_3"} and requests == 3
    assert f"record actv_{org}_poison left out" in caplog.text


def test_only_refusals_of_content_leave_records_out():
    """Storing one record at a time, and leaving out those refused, is only for what the records hold; an
    outage (a failover to a read-only standby, a timeout) must be retried with nothing left out."""
    from activity.store import refused_for_content

    errors = psycopg.errors
    content = [
        errors.ProgramLimitExceeded("x"),
        errors.NumericValueOutOfRange("x"),
        errors.CheckViolation("x"),
        errors.CharacterNotInRepertoire("x"),
        OverflowError("int too big"),
        UnicodeEncodeError("utf-8", "", 0, 1, "x"),
    ]
    passing = [errors.ReadOnlySqlTransaction("x"), errors.QueryCanceled("x"), errors.LockNotAvailable("x"),
               errors.AdminShutdown("x"), errors.SerializationFailure("x"), errors.UndefinedTable("x"),
               psycopg.OperationalError("connection lost"), psycopg.InterfaceError("closed")]  # fmt: skip
    assert [refused_for_content(e) for e in content] == [True] * len(content)
    assert [refused_for_content(e) for e in passing] == [False] * len(passing)


def test_batches_travel_deflated_and_an_inflating_bomb_is_refused():
    import zlib

    from activity.transport import ENCODING, MAX_BATCH_BYTES, decoded, encoded

    class Message:
        def __init__(self, data: bytes, headers: dict | None) -> None:
            self.data, self.headers = data, headers

    records = records_of("o", [f"actv_{i}" for i in range(200)])
    deflated = encoded(records)
    assert len(deflated) * 5 < len(encode_batch(records))
    assert decoded(Message(deflated, {ENCODING: "zlib"})) == records
    assert decoded(Message(encode_batch(records), None)) == records  # from an older publisher
    bomb = zlib.compress(b"[" + b" " * MAX_BATCH_BYTES + b"]", 9)
    with pytest.raises(ValueError, match="inflates past"):
        decoded(Message(bomb, {ENCODING: "zlib"}))
    with pytest.raises(ValueError, match="truncated"):  # its end and its checksum cut off
        decoded(Message(deflated[:-4], {ENCODING: "zlib"}))


def test_an_upgraded_consumer_reads_on_after_the_old_durables_ack_floor_and_a_new_stream_from_its_start(settings):
    """Versions that kept their place by acks left a durable consumer: its ack floor is where the position
    starts (and the durable goes). A stream deleted and made anew numbers from 1 again: it is read whole."""
    import nats
    import nats.js.api as js_api

    from activity.transport import activity_subject, ensure_activity_stream

    tag = secrets.token_hex(4)
    stream, prefix, org = f"ACTIVITY_TEST_{tag}", f"t{tag}", "org-" + secrets.token_hex(6)
    ids = [f"actv_{org}_{n}" for n in range(4)]

    async def consume_until(pool, client, count: int) -> None:
        consumer = ActivityConsumer(pool, lambda: client, stream=stream, prefix=prefix, linger=0.0)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer._consume(stop))
        try:
            await eventually_async(lambda: stored(settings, org), until=lambda n: n >= count, interval=0.1,
                                   what=f"{count} records stored")  # fmt: skip
            await asyncio.sleep(0.5)  # and no more
        finally:
            stop.set()
            await task

    async def scenario() -> None:
        client = await nats.connect(settings.nats_url)
        js = client.jetstream()
        await ensure_activity_stream(js, stream, prefix)
        try:
            for i in ids[:3]:
                await js.publish(activity_subject(prefix), encode_batch(records_of(org, [i])))
            old = await js.pull_subscribe(
                f"{prefix}.activity.>", durable=f"{prefix}_activity", stream=stream,
                config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.ALL),
            )  # fmt: skip
            fetched = await old.fetch(2, timeout=5)
            await fetched[-1].ack_sync()  # the old version stored the first two
            async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
                await consume_until(pool, client, 1)
                assert stored(settings, org) == 1  # the third only
                assert [c.name for c in await js.consumers_info(stream)] == []
                await js.delete_stream(stream)
                await ensure_activity_stream(js, stream, prefix)
                await js.publish(activity_subject(prefix), encode_batch(records_of(org, [ids[3]])))
                await consume_until(pool, client, 2)
            with psycopg.connect(settings.database_url) as conn:
                got = {r[0] for r in conn.execute("SELECT id FROM activity WHERE org_id = %s", (org,))}
            assert got == {ids[2], ids[3]}
        finally:
            await js.delete_stream(stream)
            await client.close()

    asyncio.run(scenario())
