"""The subscription runner against real PostgreSQL: redelivery, gaps, and catching up from the store."""

from __future__ import annotations

import asyncio
import secrets

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from commands.unit_of_work import CommandRunner, Context
from commands.workspaces import create_workspace
from domain.aggregates import AGGREGATES
from domain.events import SYSTEM_ACTOR
from eventstore import Codec, EventStore
from eventstore.postgres import PostgresEventStore, datastore_from_url
from pipeline import positions
from pipeline.subscription import Subscription


class SeenPositions:
    """A read model that refuses to see one event twice (primary key), to prove exactly-once effects."""

    def __init__(self) -> None:
        self.name = "seen_" + secrets.token_hex(4)

    async def handle(self, conn, batch) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(f"INSERT INTO {self.name} (position) VALUES (%s)", [(r.position,) for r in batch])


@pytest.fixture()
def store(settings):
    store = PostgresEventStore(datastore_from_url(settings.database_url), Codec(AGGREGATES))
    yield store
    store.close()


@pytest.fixture()
def handler(settings) -> SeenPositions:
    handler = SeenPositions()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {handler.name} (position bigint PRIMARY KEY)")
    return handler


def write_events(store: EventStore, count: int) -> list[int]:
    ctx = Context(org_id="org-" + secrets.token_hex(4), actor=SYSTEM_ACTOR, trace_id=secrets.token_hex(16))
    return [create_workspace(CommandRunner(store), ctx, name=f"w{i}").position for i in range(count)]


def run(settings, store, handler, scenario):
    async def main():
        async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
            subscription = Subscription(
                handler,
                store,
                pool,
                settings.database_url,
                lambda: None,
                stream=settings.stream,
                prefix=settings.subject_prefix,
            )
            await scenario(subscription)
            async with pool.connection() as conn:
                seen = [
                    r[0]
                    for r in await (
                        await conn.execute(f"SELECT position FROM {handler.name} ORDER BY position")
                    ).fetchall()
                ]
                tracked = (await positions.read_positions(conn, [handler.name]))[handler.name]
            return seen, tracked

    return asyncio.run(main())


def delivered(store: EventStore, after: int, upto: int) -> list:
    """What the relay would publish: each event with the position of the one before it."""
    events = store.read(after, 10_000, upto=upto)
    previous = [after] + [e.position for e in events[:-1]]
    return [(event, event.position, before) for event, before in zip(events, previous, strict=False)]


def test_redelivered_messages_are_applied_once(settings, store, handler):
    written = write_events(store, 3)
    messages = delivered(store, 0, written[-1])

    async def scenario(subscription):
        await subscription.apply(messages)
        await subscription.apply(messages)  # JetStream redelivers: nothing may change
        await subscription.apply(messages[-2:])

    seen, tracked = run(settings, store, handler, scenario)
    assert seen == [m[1] for m in messages]
    assert tracked == written[-1]


def test_a_gap_is_backfilled_from_the_store(settings, store, handler):
    written = write_events(store, 5)
    messages = delivered(store, 0, written[-1])

    async def scenario(subscription):
        await subscription.apply(messages[:1])
        await subscription.apply(messages[-1:])  # everything in between was lost on the way

    seen, tracked = run(settings, store, handler, scenario)
    assert seen == [m[1] for m in messages]
    assert set(written) <= set(seen) and tracked == written[-1]


def test_catch_up_reads_the_store_to_its_head(settings, store, handler):
    written = write_events(store, 4)

    async def scenario(subscription):
        assert await subscription.catch_up() >= 4
        await subscription.catch_up()  # again: only what others wrote meanwhile (the primary key refuses repeats)

    seen, tracked = run(settings, store, handler, scenario)
    assert tracked >= written[-1]
    assert seen == [e.position for e in store.read(0, 1_000_000, upto=tracked)]


def test_a_failing_batch_moves_neither_rows_nor_position(settings, store, handler):
    written = write_events(store, 2)
    messages = delivered(store, 0, written[-1])

    class Exploding(SeenPositions):
        async def handle(self, conn, batch) -> None:
            await super().handle(conn, batch)
            raise RuntimeError("crash after writing rows")

    exploding = Exploding()
    exploding.name = handler.name

    async def scenario(subscription):
        with pytest.raises(RuntimeError):
            await subscription.apply(messages)

    seen, tracked = run(settings, store, exploding, scenario)
    assert seen == [] and tracked == 0


def test_an_event_sent_without_its_data_is_read_from_the_store(settings, store, handler):
    written = write_events(store, 3)
    messages = delivered(store, 0, written[-1])
    last_event, position, previous = messages[-1]

    async def scenario(subscription):
        await subscription.apply([*messages[:-1], (None, position, previous)])

    seen, tracked = run(settings, store, handler, scenario)
    assert seen[-1] == last_event.position and tracked == written[-1]


def test_unreadable_messages_are_skipped_and_readable_ones_kept(settings, store, handler):
    from types import SimpleNamespace

    from pipeline.broker import to_message

    written = write_events(store, 1)
    [notification] = store.recorder.select_notifications(start=written[0], limit=1)
    subject, payload, headers = to_message("p", "store", written[0] - 1, notification, "org", "workspace")
    good = SimpleNamespace(subject=subject, headers=headers, data=payload)
    foreign = SimpleNamespace(subject="p.events.x", headers={"Mm-Position": "x"}, data=b"{}")
    unknown = SimpleNamespace(subject=subject, headers={**headers, "Mm-Type": "SomethingNew"}, data=payload)
    subscription = Subscription(
        handler,
        store,
        None,
        settings.database_url,
        lambda: None,
        stream=settings.stream,
        prefix=settings.subject_prefix,
    )
    decoded = subscription._decode([foreign, good, unknown])
    assert [(record.position, position) for record, position, _ in decoded] == [(written[0], written[0])]


def test_a_group_feeds_each_handler_only_past_its_own_position(settings, store):
    behind, ahead = SeenPositions(), SeenPositions()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for handler in (behind, ahead):
            conn.execute(f"CREATE TABLE {handler.name} (position bigint PRIMARY KEY)")
    written = write_events(store, 4)
    messages = delivered(store, 0, written[-1])
    swapped_at = written[1]  # as if `ahead` had just been rebuilt and swapped in at this position

    async def main():
        async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
            async with pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO mm_positions (name, position) VALUES (%s, %s)", (ahead.name, swapped_at)
                )
            group = Subscription(
                [behind, ahead],
                store,
                pool,
                settings.database_url,
                lambda: None,
                stream=settings.stream,
                prefix=settings.subject_prefix,
            )
            await group.apply(messages)
            async with pool.connection() as conn:
                seen = {}
                for handler in (behind, ahead):
                    rows = await (await conn.execute(f"SELECT position FROM {handler.name} ORDER BY 1")).fetchall()
                    seen[handler.name] = [r[0] for r in rows]
                return seen, await positions.read_positions(conn, [behind.name, ahead.name])

    seen, reached = asyncio.run(main())
    assert seen[behind.name] == [m[1] for m in messages]
    assert seen[ahead.name] == [m[1] for m in messages if m[1] > swapped_at]
    assert reached == {behind.name: written[-1], ahead.name: written[-1]}
