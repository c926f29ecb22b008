"""The event store's contract, held by both stores: PostgreSQL (on the session's real server) and in memory.

Every test taking `store` runs once per implementation; the tests taking `postgres` are about group
commit, which only the PostgreSQL store has. The PostgreSQL store has a database of its own.
"""

from __future__ import annotations

import secrets
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import StoredEvent

import migrations
from domain.aggregates import AGGREGATES
from domain.events import SYSTEM_ACTOR, AggregateType, DomainEvent, EventMeta
from domain.workspace import WORKSPACE
from eventstore import Append, Claim, ClaimTaken, Codec, ConcurrencyConflict, InMemoryEventStore, Overlay
from eventstore.postgres import PostgresEventStore, datastore_from_url
from tests.conftest import scratch_database


class Probed(DomainEvent, frozen=True):
    """An event no read model handles, so these tests cannot disturb the views other tests read."""

    n: int = 0


PROBE = AggregateType("probe", lambda state, command: [], lambda state, event, meta: event, (), events=(Probed,))
CODEC = Codec((*AGGREGATES, PROBE))


@pytest.fixture(scope="module")
def store_database(server_urls):
    """A database of these tests' own: the views and the relay of the session's system cannot decode `Probed`,
    so appending it to the shared log would stop them."""
    with scratch_database(server_urls[0], "mm_store") as database_url:
        migrations.migrate(database_url)
        yield database_url


@pytest.fixture()
def postgres(store_database):
    # One connection, so every batch and retry below shares it, as the committer's connection does.
    store = PostgresEventStore(datastore_from_url(store_database, pool_size=1, max_overflow=0), CODEC)
    yield store
    store.close()


@pytest.fixture(params=["postgres", "memory"])
def store(request):
    if request.param == "memory":
        yield InMemoryEventStore(CODEC)
    else:
        yield request.getfixturevalue("postgres")


def event(stream: str, version: int, n: int = 0) -> StoredEvent:
    meta = EventMeta("org", SYSTEM_ACTOR, "t", datetime.now(UTC))
    topic, data = CODEC.encode(Probed(n), meta)
    return StoredEvent(stream, version, topic, data)


def new_stream(prefix: str = "s") -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


# What every store does
def test_positions_increase_in_commit_order_and_the_head_follows(store):
    stream = new_stream()
    first = store.append(Append([event(stream, 1), event(stream, 2)]))
    second = store.append(Append([event(stream + "x", 1)]))
    assert first[0] < first[1] < second[0]
    assert store.head() >= second[0]
    read = store.read(first[0] - 1, 10, upto=second[0])
    mine = [r for r in read if r.stream_id.startswith(stream)]
    assert [(r.position, r.stream_id, r.version) for r in mine] == [
        (first[0], stream, 1),
        (first[1], stream, 2),
        (second[0], stream + "x", 1),
    ]
    assert all(r.aggregate == "probe" and isinstance(r.event, Probed) for r in mine)
    assert [r.position for r in store.read(first[0] - 1, 1)] == [first[0]]  # the limit
    assert store.read(second[0], 10, upto=second[0]) == []  # nothing after `upto`


def test_streams_load_in_version_order_alone_or_many_at_once(store):
    stream, other, empty = new_stream(), new_stream(), new_stream()
    store.append(Append([event(stream, 1, n=1), event(other, 1, n=2)]))
    store.append(Append([event(stream, 2, n=3)]))
    assert [(e.originator_version, CODEC.decode(e.topic, e.state)[1].n) for e in store.load(stream)] == [(1, 1), (2, 3)]
    assert store.load(empty) == []
    many = store.load_many([stream, other, empty])
    assert set(many) == {stream, other, empty}
    assert many[stream] == store.load(stream) and len(many[other]) == 1 and many[empty] == []
    assert store.load_many([]) == {}


def test_a_version_already_written_refuses_the_whole_append(store):
    stream = new_stream()
    store.append(Append([event(stream, 1)]))
    with pytest.raises(ConcurrencyConflict):
        store.append(Append([event(stream + "x", 1), event(stream, 1)]))
    assert store.load(stream + "x") == [] and len(store.load(stream)) == 1
    assert store.append(Append([event(stream, 2)]))


def test_a_read_stream_that_moved_fails_the_append_and_writes_nothing(store):
    read, written = new_stream("r"), new_stream("w")
    store.append(Append([event(read, 1)]))
    with pytest.raises(ConcurrencyConflict):
        store.append(Append([event(written, 1)], expected={read: 0}))
    assert store.load(written) == []
    assert store.append(Append([event(written, 1)], expected={read: 1}))
    assert store.append(Append([event(written, 2)], expected={new_stream("never"): 0}))  # absent: version 0


def test_claims_are_unique_until_their_owner_releases_them(store):
    scope = "test:" + secrets.token_hex(4)
    store.append(Append([event("a_" + scope, 1)], claims=[Claim(scope, "k", "a")]))
    with pytest.raises(ClaimTaken) as taken:
        store.append(Append([event("b_" + scope, 1)], claims=[Claim(scope, "k", "b")]))
    assert (taken.value.scope, taken.value.key) == (scope, "k")
    assert store.load("b_" + scope) == []  # refused whole
    store.append(Append([event("c_" + scope, 1)], releases=[Claim(scope, "k", "c")]))  # not c's to give back
    with pytest.raises(ClaimTaken):
        store.append(Append([event("b_" + scope, 1)], claims=[Claim(scope, "k", "b")]))
    store.append(Append([event("a_" + scope, 2)], releases=[Claim(scope, "k", "a")]))
    store.append(Append([event("b_" + scope, 1)], claims=[Claim(scope, "k", "b")]))


def test_appends_given_together_commit_together_and_one_that_loses_fails_alone(store):
    stream = new_stream("t")
    together = store.append_together([Append([event(stream + str(i), 1)]) for i in range(3)])
    positions = [p for future in together for p in future.result()]
    assert positions == list(range(positions[0], positions[0] + 3))  # one transaction: nothing in between
    first, clash, other = store.append_together(
        [Append([event(stream, 1)]), Append([event(stream, 1)]), Append([event(stream + "x", 1)])]
    )
    assert first.result() and other.result()
    with pytest.raises(ConcurrencyConflict):
        clash.result()
    claimed = store.append_together(
        [
            Append([event(stream + "c1", 1)], claims=[Claim(stream, "k", "1")]),
            Append([event(stream + "c2", 1)], claims=[Claim(stream, "k", "2")]),
        ]
    )
    assert claimed[0].result()
    with pytest.raises(ClaimTaken):
        claimed[1].result()


def test_appends_that_cannot_share_a_commit_are_each_decided_on_their_own(store):
    read, other = new_stream("r"), new_stream("o")
    # The second read `read` at version 0, which the first writes: it must see the first as committed before it.
    writer, reader = store.append_together(
        [Append([event(read, 1)]), Append([event(other, 1)], expected={read: 0})]
    )
    assert writer.result()
    with pytest.raises(ConcurrencyConflict):
        reader.result()
    assert store.load(other) == []


def test_an_event_stored_in_an_old_shape_is_read_in_the_current_one(store):
    from commands.unit_of_work import CommandRunner

    stream = "ws_legacy" + secrets.token_hex(4)
    legacy = (
        b'{"meta":{"org_id":"acme","actor":{"principal_type":"user","principal_id":"u1"},"trace_id":"t",'
        b'"occurred_at":"2020-01-01T00:00:00Z"},"data":{"workspace_id":"'
        + stream.encode()
        + b'","name":"old","description":null,"owner_id":"u1","labels":"ml, prod"}}'
    )  # no "v": before versions
    [position] = store.append(Append([StoredEvent(stream, 1, "WorkspaceCreated", legacy)]))
    state, version = CommandRunner(store).load(WORKSPACE, stream, "acme")
    assert (state.name, state.tags, state.region, state.is_active, version) == (
        "old",
        ["ml", "prod"],
        "us-east-1",
        True,
        1,
    )
    # The read side sees the same. Only this event is read: the log is shared with other tests, whose events
    # (more than any limit) are none of this test's business.
    [recorded] = store.read(position - 1, 1, upto=position)
    assert recorded.stream_id == stream and recorded.aggregate == "workspace"
    assert recorded.event.tags == ["ml", "prod"]


def test_an_overlay_reads_its_snapshot_then_the_store_and_keeps_its_appends(store):
    below, shadowed = new_stream(), new_stream()
    store.append(Append([event(below, 1), event(shadowed, 1)]))
    overlay = Overlay(store, {shadowed: []})
    assert len(overlay.load(below)) == 1 and overlay.load(shadowed) == []
    assert {k: len(v) for k, v in overlay.load_many([below, shadowed]).items()} == {below: 1, shadowed: 0}
    head = store.head()
    assert overlay.append(Append([event(below, 2)])) == [0]
    assert store.head() == head and len(store.load(below)) == 1  # nothing written
    kept = overlay.take()
    assert kept is not None and overlay.take() is None
    assert store.append(kept)


# The codec
def test_the_codec_reads_and_writes_only_the_types_it_was_built_with():
    meta = EventMeta("org", SYSTEM_ACTOR, "t", datetime.now(UTC))
    codec = Codec(AGGREGATES)
    with pytest.raises(KeyError):
        codec.encode(Probed(), meta)
    topic, data = CODEC.encode(Probed(7), meta)
    assert CODEC.decode(topic, data) == (meta, Probed(7)) and CODEC.aggregate_of(topic) == "probe"
    with pytest.raises(KeyError):
        codec.aggregate_of(topic)  # nor knows its aggregate
    with pytest.raises(ValueError):
        Codec((PROBE, PROBE._replace(name="other")))  # one type, two aggregates


# Group commit (PostgreSQL)
def commit_together(store: PostgresEventStore, *appends: Append) -> list[Future]:
    futures = [Future() for _ in appends]
    store._committer._commit(list(zip(appends, futures, strict=True)))
    return futures


def test_a_failed_batch_commits_the_innocent_and_fails_only_the_culprit(postgres):
    for _ in range(3):  # repeatedly on one connection: a failed batch must not poison the next
        stream = new_stream()
        first, second, third = commit_together(
            postgres, Append([event(stream, 1)]), Append([event(stream, 1)]), Append([event(stream + "x", 1)])
        )
        assert len(first.result()) == 1 and len(third.result()) == 1
        with pytest.raises(ConcurrencyConflict):
            second.result()
    assert postgres.append(Append([event(new_stream(), 1)]))


def test_appends_given_together_share_one_transaction(postgres):
    stream = new_stream("t")
    together = postgres.append_together([Append([event(stream + str(i), 1)]) for i in range(3)])
    positions = [p for future in together for p in future.result()]
    with postgres.datastore.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT xmin::text) FROM stored_events WHERE notification_id = ANY(%s)", (positions,)
        )
        assert list(cursor.fetchone().values()) == [1]  # the library's rows are dicts


def test_a_cancelled_append_is_not_written_and_stops_nothing(postgres):
    stream = new_stream("c")
    entry = [(Append([event(stream, 1)]), Future()), (Append([event(stream + "x", 1)]), Future())]
    entry[0][1].cancel()  # its caller gave up before the committer got to it
    postgres._committer._commit(entry)
    assert postgres.load(stream) == [] and len(entry[1][1].result()) == 1
    assert postgres.append(Append([event(stream, 1)]))  # the committer goes on


def test_a_batch_failing_on_a_stale_read_does_not_poison_the_connection(postgres):
    for _ in range(4):
        stream, other = new_stream(), new_stream("o")
        writer, reader = commit_together(
            postgres, Append([event(stream, 1)]), Append([event(other, 1)], expected={stream: 0})
        )
        assert writer.result()
        with pytest.raises(ConcurrencyConflict):
            reader.result()
    assert postgres.append(Append([event(new_stream(), 1)]))
