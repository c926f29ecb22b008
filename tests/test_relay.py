"""The relay against real PostgreSQL and JetStream: every event published once, in order, each naming the one
before it; its position recorded only every so often while it is busy, and recorded once it is idle or stops."""

from __future__ import annotations

import asyncio
import secrets

import psycopg
import pytest

from commands.unit_of_work import CommandRunner, Context
from commands.workspaces import create_workspace
from domain.aggregates import AGGREGATES
from domain.events import SYSTEM_ACTOR
from eventstore import Codec, EventStore
from eventstore.postgres import PostgresEventStore, datastore_from_url
from pipeline import positions, relay
from pipeline.broker import HEADER_POSITION, HEADER_PREVIOUS, all_events, connect_nats
from tests.conftest import migrated_settings, scratch_database
from tests.support import eventually_async


@pytest.fixture()
def isolated(server_urls, tmp_path):
    """A database and stream of their own: the session's system runs a relay, which would hold the lead."""
    admin_url, nats_url = server_urls
    with scratch_database(admin_url, "mm_relay") as database_url:
        settings = migrated_settings(database_url, nats_url, tmp_path)
        store = PostgresEventStore(datastore_from_url(settings.database_url), Codec(AGGREGATES))
        yield settings, store
        store.close()


def write_events(store: EventStore, count: int) -> list[int]:
    ctx = Context(org_id="org-" + secrets.token_hex(4), actor=SYSTEM_ACTOR, trace_id=secrets.token_hex(16))
    return [create_workspace(CommandRunner(store), ctx, name=f"w{i}").position for i in range(count)]


async def published(nats, settings) -> list[tuple[int, int]]:
    """(position, previous position) of every message in the stream, in stream order."""
    js = nats.jetstream()
    subscription = await js.pull_subscribe(all_events(settings.subject_prefix), stream=settings.stream)
    found = []
    while True:
        try:
            messages = await subscription.fetch(500, timeout=2.0)
        except TimeoutError:
            return found
        found += [(int(m.headers[HEADER_POSITION]), int(m.headers[HEADER_PREVIOUS])) for m in messages]


async def recorded_position(settings) -> int:
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        return (await positions.read_positions(conn, [positions.RELAY]))[positions.RELAY]


def recorded_saves(settings) -> list[int]:
    """Every position the relay has written to mm_positions, as a trigger in its own database saw them."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS relay_saves (n bigserial PRIMARY KEY, position bigint NOT NULL)")
        return [row[0] for row in conn.execute("SELECT position FROM relay_saves ORDER BY n")]


def count_saves(settings) -> None:
    recorded_saves(settings)  # makes the table
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION note_relay_save() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO relay_saves (position) VALUES (NEW.position); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER relay_saves AFTER UPDATE ON mm_positions FOR EACH ROW "
            f"WHEN (NEW.name = '{positions.RELAY}') EXECUTE FUNCTION note_relay_save()"
        )


def test_relay_publishes_in_order_and_records_its_position_every_so_often(isolated):
    settings, store = isolated
    count_saves(settings)

    async def running(save_every: float, work):
        nats = await connect_nats(settings.nats_url)
        stop = asyncio.Event()
        runner = relay.Relay(
            settings.database_url, lambda: nats, codec=store.codec, stream=settings.stream,
            prefix=settings.subject_prefix, save_every=save_every,
        )  # fmt: skip
        task = asyncio.create_task(runner.run(stop))
        try:
            return await work(nats, runner)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await nats.close()

    async def busy_then_idle(nats, runner):
        written = []
        for _ in range(20):  # rounds of a few events each, well within one save period
            written += await asyncio.to_thread(write_events, store, 3)
        await eventually_async(  # recorded once idle
            lambda: recorded_position(settings),
            until=lambda position: position >= written[-1],
            what=f"the relay to record its position {written[-1]}",
            interval=0.05,
        )
        return written, await published(nats, settings)

    written, seen = asyncio.run(running(1.0, busy_then_idle))
    assert [position for position, _ in seen] == written
    assert [previous for _, previous in seen] == [0, *written[:-1]]
    # A save a second, not one a round: the 60 creates commit one by one over a few seconds, and a relay saving
    # every round saved 42 times for them.
    busy_saves = recorded_saves(settings)
    assert len(busy_saves) < len(written) / 4, busy_saves

    async def publish_then_stop(nats, runner):
        more = await asyncio.to_thread(write_events, store, 2)
        await eventually_async(
            lambda: runner.published, until=lambda count: count >= len(more), what=f"the relay to publish {len(more)}"
        )
        return more

    more = asyncio.run(running(60.0, publish_then_stop))  # no save falls due: only the one on the way out
    assert recorded_saves(settings)[len(busy_saves) :] == [more[-1]]
    assert asyncio.run(recorded_position(settings)) == more[-1]
