"""The API processes' workspace cache: served only while it hears the projector's announcements, dropped
row by row as changes commit, never across orgs, and emptied by a rebuild's swap."""

from __future__ import annotations

import asyncio
import re

import psycopg
import pytest

from api.cache import CacheNoticeListener, ViewCache
from projections import cache_notices
from projections.rebuild import rebuild
from projections.workspaces import WorkspaceListing
from tests.conftest import as_token, issue_token, open_store, position_of
from tests.support import eventually, eventually_async


def cache_hits(api) -> int:
    metrics = api.get("/metrics").text
    return int(re.search(r'mm_view_cache_hits_total\{view="workspaces"\} (\d+)', metrics).group(1))


def serving(api) -> None:
    """Waits until the API's cache serves: from when its listener hears its own heartbeat."""
    eventually(
        lambda: 'mm_view_cache_serving{view="workspaces"} 1' in api.get("/metrics").text,
        what="the workspace cache to start serving",
    )


def settled_workspace(api, org: str, name: str) -> str:
    """A new workspace once its view shows the bucket ready: nothing more changes it unasked; and the cache
    serving. Asked of the listing, which only the view answers: a GET by id may answer from the event store
    before the view has the change, and such an answer is never cached."""
    serving(api)
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": name}).json()["workspace_id"]
    eventually(
        lambda: {w["workspace_id"]: w for w in api.get(f"/v1/orgs/{org}/workspaces").json()["workspaces"]},
        until=lambda listed: listed.get(ws, {}).get("bucket_status") == "ready",
        what="the view to show the bucket ready",
        interval=0.02,
    )
    return ws


def test_a_cached_workspace_is_served_until_its_change_commits_then_the_change(api, org):
    ws = settled_workspace(api, org, "before")
    path = f"/v1/orgs/{org}/workspaces/{ws}"
    api.get(path)  # fills the cache, if the last read did not
    hits = cache_hits(api)
    assert api.get(path).json()["name"] == "before"
    assert cache_hits(api) == hits + 1

    updated = api.put(path, json={"name": "after"})
    assert updated.status_code == 200
    # A read that must see the update's position reads the view, not the cache.
    assert api.get(path, headers={"X-Min-Position": position_of(updated)}).json()["name"] == "after"
    assert cache_hits(api) == hits + 1
    eventually(  # without the announcement, "before" would stay for good
        lambda: api.get(path).json()["name"],
        until=lambda name: name == "after",
        what="the cached workspace to show its change",
        interval=0.02,
    )

    assert api.delete(path).status_code == 200
    eventually(
        lambda: api.get(path).status_code,
        until=lambda status: status == 404,
        what="the cached workspace to go with its deletion",
        interval=0.02,
    )


def test_a_cached_workspace_is_never_served_to_another_org(api, system, org):
    ws = settled_workspace(api, org, "mine")
    api.get(f"/v1/orgs/{org}/workspaces/{ws}")
    hits = cache_hits(api)
    assert api.get(f"/v1/orgs/{org}/workspaces/{ws}").status_code == 200
    assert cache_hits(api) == hits + 1  # cached, and served from it

    other = org + "-other"
    with as_token(system, issue_token(api, other, "owner")) as intruder:
        answer = intruder.get(f"/v1/orgs/{other}/workspaces/{ws}")
    assert answer.status_code == 404, answer.text
    assert api.get(f"/v1/orgs/{other}/workspaces/{ws}").status_code == 404  # the root token, in the wrong org


def test_payloads_carry_every_key_once_within_postgresqls_limit():
    keys = [f"ws_{n:05d}" + "x" * 120 for n in range(500)]
    chunks = cache_notices.payloads(keys + keys[:10])
    assert len(chunks) > 1
    assert all(len(chunk.encode()) < 8000 for chunk in chunks)
    assert sorted(k for chunk in chunks for k in cache_notices.keys_of(chunk)) == sorted(keys)
    assert cache_notices.payloads([]) == []


async def _listening(settings, cache: ViewCache):
    stop = asyncio.Event()
    name = f"view-cache-test-{cache.view}"  # not the system's listener, which the tests around this use
    listener = CacheNoticeListener(settings.database_url, [cache], check_every=0.2, application_name=name)
    task = asyncio.create_task(listener.run(stop))
    await asyncio.wait_for(listener.connected.wait(), 10)
    return stop, listener, task


def test_an_entry_is_dropped_when_the_announcing_transaction_commits_not_before(settings):
    async def scenario() -> None:
        cache: ViewCache[str] = ViewCache("cache_test", 100)
        assert cache.get("org", "a") is None and not cache.listening
        cache.put("org", "a", "unheard", cache.ticket())
        assert cache.get("org", "a") is None  # not listening yet: nothing is kept

        stop, _, task = await _listening(settings, cache)
        for key in ("a", "b"):
            cache.put("org", key, f"value of {key}", cache.ticket())
        assert cache.get("org", "a") == "value of a"
        assert cache.get("other-org", "a") is None

        # A change of ~2,000 keys (several notices) announced in a transaction: heard only once it commits.
        many = [f"k{n:04d}" + "y" * 30 for n in range(2000)]
        async with await psycopg.AsyncConnection.connect(settings.database_url) as writer:
            async with writer.transaction():
                await cache_notices.announce(writer, "cache_test", ["a", *many])
                # Not heard while uncommitted: a wait for nothing, long enough for a notice to arrive if sent.
                await asyncio.sleep(0.3)
                assert cache.get("org", "a") == "value of a"
            await eventually_async(lambda: cache.get("org", "a") is None)
        assert cache.get("org", "b") == "value of b"  # unchanged rows stay

        # A read that missed, with an announcement arriving while it read: what it read is not kept.
        ticket = cache.ticket()
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as writer:
            await cache_notices.announce(writer, "cache_test", ["c"])
        await eventually_async(lambda: cache.ticket() != ticket)
        cache.put("org", "b2", "read before the announcement", ticket)
        assert cache.get("org", "b2") is None

        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as writer:
            await cache_notices.announce(writer, "cache_test", [cache_notices.EVERY_KEY])
        await eventually_async(lambda: cache.get("org", "b") is None)
        stop.set()
        await task

    asyncio.run(scenario())


def test_a_lost_connection_empties_the_cache_until_it_listens_again(settings):
    async def scenario() -> None:
        cache: ViewCache[str] = ViewCache("cache_test_lost", 100)
        stop, listener, task = await _listening(settings, cache)
        cache.put("org", "a", "cached", cache.ticket())
        assert cache.get("org", "a") == "cached"
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (listener.application_name,),
            )
        await eventually_async(lambda: not cache.listening)
        assert cache.get("org", "a") is None
        cache.put("org", "a", "read while deaf", cache.ticket())
        assert cache.get("org", "a") is None  # nothing is kept while announcements may be missed
        await eventually_async(lambda: cache.listening)  # back within the retry delay
        assert listener.connected.is_set()
        cache.put("org", "a", "cached again", cache.ticket())
        assert cache.get("org", "a") == "cached again"
        stop.set()
        await task

    asyncio.run(scenario())


@pytest.mark.parametrize("entries", [1, 3])
def test_a_full_cache_makes_room_by_dropping_its_oldest_entry(entries):
    cache: ViewCache[int] = ViewCache("cache_test_full", entries)
    cache.listen(True)
    for n in range(entries + 1):
        cache.put("org", f"k{n}", n, cache.ticket())
    assert cache.get("org", "k0") is None
    assert [cache.get("org", f"k{n}") for n in range(1, entries + 1)] == list(range(1, entries + 1))


def test_a_rebuilds_swap_tells_the_caches_to_empty(api, org, settings):
    settled_workspace(api, org, "rebuilt")
    store = open_store(settings.database_url)
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {cache_notices.channel(WorkspaceListing.name)}")
            asyncio.run(rebuild(settings.database_url, store, [WorkspaceListing()]))
            heard = []
            for notice in listener.notifies(timeout=5):  # live batches may announce their keys too
                heard.append(notice.payload)
                if notice.payload == cache_notices.EVERY_KEY:
                    break
    finally:
        store.close()
    assert cache_notices.EVERY_KEY in heard


def test_reads_under_a_deleted_workspace_answer_404_once_its_deletion_is_seen(api, org):
    ws = settled_workspace(api, org, "nested")
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    for path in (f"{base}/activity", f"{base}/environments"):
        api.get(path)  # fills the cache, if the last read did not
        assert api.get(path).status_code == 200
    hits = cache_hits(api)
    assert api.get(f"{base}/activity").status_code == 200
    assert cache_hits(api) == hits + 1  # the workspace's existence came from the cache

    deleted = api.delete(base)
    assert api.get(f"{base}/environments", headers={"X-Min-Position": position_of(deleted)}).status_code == 404
    eventually(
        lambda: api.get(f"{base}/activity").status_code,
        until=lambda status: status == 404,
        what="reads under a deleted workspace to answer 404",
        interval=0.02,
    )


class DeafListener(CacheNoticeListener):
    """Announces its heartbeat where it does not listen: as behind a pooler that passes no notices on."""

    connections = 0  # how many connections it has given up on

    async def _listen(self, stop) -> None:
        try:
            await super()._listen(stop)
        finally:
            self.connections += 1

    async def _beat(self, conn) -> None:
        listened, self.heartbeat = self.heartbeat, self.heartbeat + "_lost"
        try:
            await super()._beat(conn)
        finally:
            self.heartbeat = listened


def test_a_listener_that_does_not_hear_its_heartbeat_never_serves(settings):
    async def scenario() -> None:
        cache: ViewCache[str] = ViewCache("cache_test_deaf", 100)
        stop = asyncio.Event()
        listener = DeafListener(settings.database_url, [cache], check_every=0.1)
        task = asyncio.create_task(listener.run(stop))

        def never_served_yet() -> int:
            cache.put("org", "a", "cached", cache.ticket())
            assert not cache.listening and cache.get("org", "a") is None
            return listener.connections

        # Several connections, each given up after one silent heartbeat, never serving meanwhile.
        await eventually_async(never_served_yet, until=lambda given_up: given_up >= 2, what="two connections given up")
        stop.set()
        await task

    asyncio.run(scenario())


def test_a_read_that_waited_for_a_position_asks_the_view_and_refreshes_the_cache(api, org, settings):
    from psycopg_pool import AsyncConnectionPool

    from api.common import Views
    from domain.aggregates import AGGREGATES
    from eventstore import Codec

    ws = settled_workspace(api, org, "fresh")

    async def scenario() -> None:
        cache: ViewCache = ViewCache("workspaces", 100)
        cache.listen(True)  # no listener: nothing drops entries here but the reads themselves
        cache.put(org, ws, "stale", cache.ticket())
        cache.put(org, "ws_gone", "stale", cache.ticket())
        async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
            # no waiting asked of it here
            views = Views(pool, read_your_writes=None, workspace_cache=cache, codec=Codec(AGGREGATES))
            assert await views.find_workspace(org, ws, None) == "stale"  # served from the cache
            fresh = await views.find_workspace(org, ws, 1)
            assert fresh.workspace_id == ws and fresh.name == "fresh"  # from the view
            assert await views.find_workspace(org, ws, None) == fresh  # and no older after it
            assert await views.find_workspace(org, "ws_gone", 1) is None
            assert await views.find_workspace(org, "ws_gone", None) is None

    asyncio.run(scenario())
