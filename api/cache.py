"""Rows of a view held in an API process, so reading one again costs no round trip to PostgreSQL.

An entry is dropped when the live projector commits a batch that changed its row (`projections.cache_notices`
announces the keys with the commit; `CacheNoticeListener` hears them). A cache serves only while its listener
is connected and listening: before that, and from the moment the connection fails, it is empty and every
read goes to the view, until a new connection listens again. So a cached row is never older than what the
view held when the announcement of its change arrived, a few milliseconds after that change committed.

A read that missed stores what it found only if no announcement arrived while it read (`ticket`): the row
it read might be the one an announcement had just replaced. Reads that must see a given position
(`X-Min-Position`) read the view and keep what they read in place of the cached row (`refresh`): the
announcements up to that position may still be on their way. The live projector announces changes, not
creations: a cache keeps only rows it has read, so it never holds one before its creation commits.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import psycopg

from pipeline.roles import sleep_unless
from projections import cache_notices

log = logging.getLogger(__name__)

V = TypeVar("V")
APPLICATION_NAME = "mechamental-view-cache"  # how its connection shows in pg_stat_activity


class ViewCache(Generic[V]):
    """Up to `max_entries` rows of one view by key, each with the org it belongs to; past that, the oldest
    entry makes room."""

    def __init__(self, view: str, max_entries: int) -> None:
        self.view = view
        self.max_entries = max_entries
        self.listening = False
        self.hits = 0
        self._entries: dict[str, tuple[str, V]] = {}
        self._generation = 0  # moves on every announcement heard and every start or stop of listening

    def get(self, org_id: str, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != org_id:  # another org's row is never served, even by mistake
            return None
        self.hits += 1
        return entry[1]

    @property
    def size(self) -> int:
        return len(self._entries)

    def ticket(self) -> int:
        """Taken before reading the view on a miss, and given back with what was read (`put`)."""
        return self._generation

    def put(self, org_id: str, key: str, value: V, ticket: int) -> None:
        if not self.listening or ticket != self._generation or self.max_entries <= 0:
            return  # an announcement came while the row was read: it may be stale already
        if key not in self._entries and len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (org_id, value)

    def changed(self, keys: list[str]) -> None:
        self._generation += 1
        if cache_notices.EVERY_KEY in keys:
            self._entries.clear()
            return
        for key in keys:
            self._entries.pop(key, None)

    def listen(self, listening: bool) -> None:
        """Starts serving (once announcements are heard) or stops (once they may be missed); empty either way."""
        self.listening = listening
        self._generation += 1
        self._entries.clear()

    async def read(self, org_id: str, key: str, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached row, else `load()`'s, kept when found. Rows not found are not kept."""
        if (value := self.get(org_id, key)) is not None:
            return value
        return await self.refresh(org_id, key, load)

    async def refresh(self, org_id: str, key: str, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """`load()`'s row, never the cached one, kept in place of it: a read that waited for a position may see
        a change whose announcement has not come yet, and later reads should not see less."""
        self._entries.pop(key, None)
        ticket = self.ticket()
        value = await load()
        if value is not None:
            self.put(org_id, key, value, ticket)
        return value


class CacheNoticeListener:
    """Listens for the announcements of the caches' views on a connection of its own, and reconnects after a
    failure. Every `check_every` seconds it announces a heartbeat to itself, and stops serving unless it hears
    it back within `check_every` more: a server gone without a word, or a pooler that does not pass notices
    on, would otherwise leave it serving rows whose changes it can no longer hear."""

    def __init__(
        self,
        database_url: str,
        caches: list[ViewCache],
        *,
        check_every: float = 1.0,
        application_name: str = APPLICATION_NAME,
    ) -> None:
        self.database_url = database_url
        self.application_name = application_name
        self.caches = {cache_notices.channel(cache.view): cache for cache in caches}
        self.check_every = check_every
        self.heartbeat = cache_notices.channel(f"heartbeat_{secrets.token_hex(6)}")  # this listener's own
        self.connected = asyncio.Event()  # set while listening (tests wait on it)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._listen(stop)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - PostgreSQL down or restarting: read from the views meanwhile
                log.info("view caches off until PostgreSQL answers again: %s: %s", type(error).__name__, error)
            finally:
                self._stop_serving()
            await sleep_unless(stop, 1.0)

    async def _listen(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=3,
            application_name=self.application_name,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        ) as conn:
            for name in [*self.caches, self.heartbeat]:
                await conn.execute(f"LISTEN {name}")
            await self._beat(conn, until_heard=True)  # notices pass: serving may start
            for cache in self.caches.values():
                cache.listen(True)
            self.connected.set()
            while not stop.is_set():
                await self._beat(conn)

    async def _beat(self, conn: psycopg.AsyncConnection, *, until_heard: bool = False) -> None:
        """Announces a heartbeat, then applies the announcements of `check_every` seconds (or until the heartbeat
        comes back); the heartbeat must be among them."""
        await asyncio.wait_for(conn.execute("SELECT pg_notify(%s, '')", (self.heartbeat,)), self.check_every)
        heard = False
        async for notice in conn.notifies(timeout=self.check_every):
            if notice.channel == self.heartbeat:
                heard = True
                if until_heard:
                    return
            elif (cache := self.caches.get(notice.channel)) is not None:
                cache.changed(cache_notices.keys_of(notice.payload))
        if not heard:
            raise TimeoutError(f"no heartbeat heard back within {self.check_every} s")

    def _stop_serving(self) -> None:
        self.connected.clear()
        for cache in self.caches.values():
            cache.listen(False)
