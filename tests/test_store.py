"""The event store's group commit against real PostgreSQL."""

from __future__ import annotations

import secrets
from concurrent.futures import Future
from datetime import UTC

import pytest
from eventsourcing.persistence import StoredEvent

from commands.store import Append, Claim, ClaimTaken, ConcurrencyConflict, EventStore, datastore_from_url
from domain.events import SYSTEM_ACTOR, DomainEvent, EventMeta, encode, register


class Probed(DomainEvent, frozen=True):
    """An event no read model handles, so these tests cannot disturb the views other tests read."""


register("probe", Probed)


@pytest.fixture()
def store(settings):
    # One connection, so every batch and retry below shares it, as the committer's connection does.
    store = EventStore(datastore_from_url(settings.database_url, pool_size=1, max_overflow=0))
    yield store
    store.close()


def event(stream: str, version: int) -> StoredEvent:
    from datetime import datetime

    meta = EventMeta("org", SYSTEM_ACTOR, "t", datetime.now(UTC))
    topic, data = encode(Probed(), meta)
    return StoredEvent(stream, version, topic, data)


def commit_together(store: EventStore, *appends: Append) -> list[Future]:
    futures = [Future() for _ in appends]
    store._committer._commit(list(zip(appends, futures, strict=True)))
    return futures


def test_a_failed_batch_commits_the_innocent_and_fails_only_the_culprit(store):
    for _ in range(3):  # repeatedly on one connection: a failed batch must not poison the next
        stream = "s_" + secrets.token_hex(4)
        first, second, third = commit_together(
            store, Append([event(stream, 1)]), Append([event(stream, 1)]), Append([event(stream + "x", 1)])
        )
        assert len(first.result()) == 1 and len(third.result()) == 1
        with pytest.raises(ConcurrencyConflict):
            second.result()
    assert store.append(Append([event("s_" + secrets.token_hex(4), 1)]))


def test_appends_given_together_commit_in_one_transaction_or_each_alone(store):
    stream = "t_" + secrets.token_hex(4)
    together = store.append_together([Append([event(stream + str(i), 1)]) for i in range(3)])
    positions = [future.result() for future in together]
    with store.datastore.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT xmin::text) FROM stored_events WHERE notification_id = ANY(%s)",
            ([p for ps in positions for p in ps],),
        )
        assert list(cursor.fetchone().values()) == [1]  # the library's rows are dicts
    # One that loses a race fails alone; the others still commit.
    first, clash, other = store.append_together(
        [Append([event(stream, 1)]), Append([event(stream, 1)]), Append([event(stream + "x", 1)])]
    )
    assert first.result() and other.result()
    with pytest.raises(ConcurrencyConflict):
        clash.result()


def test_a_cancelled_append_is_not_written_and_stops_nothing(store):
    stream = "c_" + secrets.token_hex(4)
    entry = [(Append([event(stream, 1)]), Future()), (Append([event(stream + "x", 1)]), Future())]
    entry[0][1].cancel()  # its caller gave up before the committer got to it
    store._committer._commit(entry)
    assert store.load(stream) == [] and len(entry[1][1].result()) == 1
    assert store.append(Append([event(stream, 1)]))  # the committer goes on


def test_a_read_stream_that_moved_fails_the_append_and_writes_nothing(store):
    read, written = "r_" + secrets.token_hex(4), "w_" + secrets.token_hex(4)
    store.append(Append([event(read, 1)]))
    with pytest.raises(ConcurrencyConflict):
        store.append(Append([event(written, 1)], expected={read: 0}))
    assert store.load(written) == []
    assert store.append(Append([event(written, 1)], expected={read: 1}))


def test_claims_are_unique_until_released(store):
    scope = "test:" + secrets.token_hex(4)
    store.append(Append([event("a_" + scope, 1)], claims=[Claim(scope, "k", "a")]))
    with pytest.raises(ClaimTaken):
        store.append(Append([event("b_" + scope, 1)], claims=[Claim(scope, "k", "b")]))
    store.append(Append([event("a_" + scope, 2)], releases=[Claim(scope, "k", "a")]))
    store.append(Append([event("b_" + scope, 1)], claims=[Claim(scope, "k", "b")]))


def test_a_batch_failing_on_a_stale_read_does_not_poison_the_connection(store):
    for _ in range(4):
        stream, other = "s_" + secrets.token_hex(4), "o_" + secrets.token_hex(4)
        writer, reader = commit_together(
            store, Append([event(stream, 1)]), Append([event(other, 1)], expected={stream: 0})
        )
        assert writer.result()
        with pytest.raises(ConcurrencyConflict):
            reader.result()
    assert store.append(Append([event("s_" + secrets.token_hex(4), 1)]))


def test_an_event_stored_in_an_old_shape_is_read_in_the_current_one(store):
    from commands.aggregates import Aggregates
    from domain.workspace import WORKSPACE

    stream = "ws_legacy" + secrets.token_hex(4)
    legacy = (
        b'{"meta":{"org_id":"acme","actor":{"principal_type":"user","principal_id":"u1"},"trace_id":"t",'
        b'"occurred_at":"2020-01-01T00:00:00Z"},"data":{"workspace_id":"'
        + stream.encode()
        + b'","name":"old","description":null,"owner_id":"u1","labels":"ml, prod"}}'
    )  # no "v": before versions
    [position] = store.append(Append([StoredEvent(stream, 1, "WorkspaceCreated", legacy)]))
    state, version = Aggregates(store).load(WORKSPACE, stream, "acme")
    assert (state.name, state.tags, state.region, state.is_active, version) == (
        "old",
        ["ml", "prod"],
        "us-east-1",
        True,
        1,
    )
    # The read side sees the same. Only this event is read: the log is shared with other tests, whose events
    # (more than any limit, or of types only they register) are none of this test's business.
    [recorded] = store.read(position - 1, 1, upto=position)
    assert recorded.stream_id == stream
    assert recorded.event.tags == ["ml", "prod"]
