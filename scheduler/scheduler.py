"""The scheduler: fires enabled scheduled actions at their slots.

One scheduler is active at a time (an advisory lock); others wait and take over when it dies. The
work list is the actions view (`next_run_at`), but the decision is the action aggregate's: firing a
slot and moving `next_run_at` past it happen in one transaction, and the run's id derives from the
action and the slot, so no slot fires twice, across schedulers and restarts alike.

Thousands of actions share a slot (every `* * * * *` action fires at :00), and deciding one costs CPU
(folding its streams, croniter) on top of its reads: decided one transaction at a time after the slot,
the last would fire late (BENCHMARKS.md, "Appendix: why the code is the way it is"). So the work is done
ahead and in bulk:

- The streams of a page of actions are read with one query (a snapshot); each action is then decided
  by the unchanged `fire_schedule` use case against that snapshot, with the clock at the slot, and
  its append is kept instead of written ("rehearsed").
- Rehearsed fires of a slot still to come are held until the slot, then committed many actions per
  append, and all of a slot's appends in one transaction (up to `events_per_commit` events). Nothing is
  written before its slot.
- Every append carries the versions its decision read, as any command's does: if an action, its
  workspace, its app or its previous run changed after the snapshot, the append is refused, and that
  action is decided again, from the store, the ordinary way. A snapshot can make a decision late,
  never wrong.
- An action whose previous run is still busy would only be skipped (the aggregate's rule). Ahead of its
  slot it is not decided but looked at again every few seconds; at its slot it is decided after the
  others, so their fires do not wait for its skip.
- The view lags the store: for a while after a fire it still shows the old slot. A row already decided
  is not decided again until the view shows it a new `next_run_at`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import psycopg
from psycopg_pool import AsyncConnectionPool

from domain.action import ACTION, previous_run_busy, scheduled_run_id
from domain.events import new_trace_id
from domain.run import RUN
from eventstore import Append, ConcurrencyConflict, EventStore, Overlay
from eventstore.batching import Commit, chunks, merged, written
from pipeline.roles import lead, sleep_unless
from projections.actions import due_actions

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# How a due action is fired: the use case (commands.actions.fire_schedule) run against a store at a clock's time,
# handed in by the composition root. The scheduler decides when, and against which store: the live one, or an
# overlay that rehearses a slot ahead of it.
FireOn = Callable[[EventStore, Clock], Callable[[str, str, str], object | None]]

class Due(NamedTuple):
    """A row of the actions view whose slot has come, or comes within the look-ahead."""

    org_id: str
    action_id: str
    next_run_at: datetime


class Decision(NamedTuple):
    """What the aggregate decided for one action, not yet written (None: nothing to write). `waiting`: not
    decided, because the slot is still ahead and the action's previous run has not finished yet."""

    due: Due
    append: Append | None
    fired: bool
    waiting: bool = False

    @property
    def write(self) -> Append:
        assert self.append is not None, "a decision with nothing to write"
        return self.append


class Plan(NamedTuple):
    """Decisions ready to write: those that can share an append, merged, and those appended on their own."""

    decisions: list[Decision]
    groups: list[list[Decision]]
    merged: list[Append]
    alone: list[Decision]


class Held(NamedTuple):
    """Rehearsed fires of one slot, planned and committed when it comes."""

    slot: datetime
    plan: Plan


class Scheduler:
    def __init__(
        self,
        store: EventStore,
        fire_on: FireOn,
        pool: AsyncConnectionPool,
        database_url: str,
        *,
        clock: Clock = lambda: datetime.now(UTC),
        interval: float = 0.2,
        batch: int = 500,
        lookahead: float = 30.0,
        actions_per_append: int = 250,
        events_per_commit: int = 25_000,
        workers: int = 16,
    ) -> None:
        self.store = store
        self.clock = clock
        self.fire_on = fire_on
        self._fire = fire_on(store, clock)
        self.pool = pool
        self.database_url = database_url
        self.interval = interval
        self.batch = batch  # actions per page of the view, and per snapshot
        self.lookahead = timedelta(seconds=lookahead)
        self.actions_per_append = actions_per_append
        self.events_per_commit = events_per_commit
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="scheduler")
        self._held: list[Held] = []
        # action id -> (the view's next_run_at we decided on, until when that decision stands). The view
        # lags the store: for a while after a fire it still shows the old slot, and those rows are skipped
        # here instead of being decided again. A new next_run_at in the view is always looked at.
        self._settled: dict[str, tuple[datetime, datetime]] = {}
        self.recheck = timedelta(seconds=30)  # a settled row the view still shows is decided again after this
        self.busy_recheck = timedelta(seconds=3)
        self.look_ahead_every = timedelta(seconds=1)
        self._next_look_ahead = datetime.min.replace(tzinfo=UTC)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await lead(self.database_url, "scheduler", stop, self._lead)
        finally:
            self._workers.shutdown(wait=False, cancel_futures=True)

    async def _lead(self, lock: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.tick()
                await lock.execute("SELECT 1")  # still leader: the lock lives with this connection
                await sleep_unless(stop, self._pause())
        finally:
            # A new leader decides from the store again; what we rehearsed is not ours to write any more.
            self._held.clear()
            self._settled.clear()

    def _pause(self) -> float:
        """Until the next tick: the poll interval, or less when held fires are due sooner."""
        if not self._held:
            return self.interval
        until = min(held.slot for held in self._held) - self.clock()
        return max(0.0, min(self.interval, until.total_seconds()))

    async def tick(self) -> int:
        """Commits held fires whose slot has come, then decides every due or soon-due action; returns how many
        runs this tick started."""
        now = self.clock()
        started = await self._release_held(now)
        self._forget_settled(now)
        busy: list[Due] = []
        for page in await self._due_pages(self._horizon(now)):
            started += await self._release_held(self.clock())  # a slot that came while we worked
            started += await self._handle(page, busy)
        # Due actions whose previous run is still busy come last: they will only be skipped, and deciding them
        # first would make the fires of the others wait.
        for start in range(0, len(busy), self.batch):
            started += await self._decide_now(busy[start : start + self.batch])
        return started

    def _horizon(self, now: datetime) -> datetime:
        """How far ahead this tick looks. Ahead means thousands of settled rows to read again, so only once a
        second; the ticks between look at what is due now."""
        if now < self._next_look_ahead:
            return now
        self._next_look_ahead = now + self.look_ahead_every
        return now + self.lookahead

    async def _due_pages(self, horizon: datetime) -> list[list[Due]]:
        """The view's rows due by `horizon` that are not settled, in pages (of one query: `due_actions`)."""
        async with self.pool.connection() as conn:
            rows = [Due(*row) for row in await due_actions(conn, horizon)]
        fresh = [due for due in rows if not self._is_settled(due)]
        return [fresh[start : start + self.batch] for start in range(0, len(fresh), self.batch)]

    async def _handle(self, page: list[Due], busy: list[Due]) -> int:
        """Decides and writes the page's due actions (adding to `busy` those whose previous run is still busy),
        and decides and holds those whose slot is still ahead."""
        now = self.clock()
        ready = [due for due in page if due.next_run_at <= now]
        started = await self._decide_now(ready, busy) if ready else 0
        for slot, coming in _by_slot(due for due in page if due.next_run_at > now):
            decisions = await asyncio.to_thread(self._rehearse, coming, slot, busy_waits=True)
            fires = [decision for decision in decisions if decision.fired]
            if fires:
                self._held.append(Held(slot, self._plan(fires)))  # planned now: less to do at the slot
            for decision in decisions:
                self._settle(decision.due, self._settled_until(decision, now, slot))
        return started

    async def _decide_now(self, page: list[Due], busy: list[Due] | None = None) -> int:
        """Decides and writes due actions; with `busy`, those whose previous run is busy are put there instead."""
        now = self.clock()
        decisions = await asyncio.to_thread(self._rehearse, page, now, busy_waits=busy is not None)
        if busy is not None:
            busy += [decision.due for decision in decisions if decision.waiting]
        decided = [decision for decision in decisions if not decision.waiting]
        return await asyncio.to_thread(self._write, [self._plan(decided)], now)

    def _settled_until(self, decision: Decision, now: datetime, slot: datetime) -> datetime:
        """When an action decided ahead of its slot is looked at again: a held fire stands; an action whose
        previous run is still busy is looked at every few seconds, in case it finishes before the slot;
        anything else (nothing due after all) is decided again when the slot comes, on fresher state."""
        if decision.fired:
            return slot + self.recheck
        if decision.waiting:
            return min(slot, now + self.busy_recheck)
        return slot

    async def _release_held(self, now: datetime) -> int:
        due = [held for held in self._held if held.slot <= now]
        if not due:
            return 0
        self._held = [held for held in self._held if held.slot > now]
        # All at once, so their appends are in flight together and group commit fills each transaction.
        return await asyncio.to_thread(self._write, [held.plan for held in due], now)

    # The views and what they show
    def _is_settled(self, due: Due) -> bool:
        settled = self._settled.get(due.action_id)
        return settled is not None and settled[0] == due.next_run_at

    def _settle(self, due: Due, until: datetime) -> None:
        self._settled[due.action_id] = (due.next_run_at, until)

    def _forget_settled(self, now: datetime) -> None:
        expired = [action_id for action_id, (_, until) in self._settled.items() if until <= now]
        for action_id in expired:
            del self._settled[action_id]

    # Deciding (in a worker thread)
    def _rehearse(self, page: list[Due], as_of: datetime, *, busy_waits: bool) -> list[Decision]:
        """Every action of the page decided as of `as_of`, against one snapshot of the streams it reads.
        `busy_waits`: an action whose previous run is still busy is not decided (`waiting`); deciding it would
        only say "skip" for now, and deciding is most of the cost."""
        snapshot = Snapshot(self.store, page)
        rehearsal = Overlay(self.store, snapshot.streams)
        fire = self.fire_on(rehearsal, lambda: as_of)
        decisions = []
        for due in page:
            if busy_waits and snapshot.previous_run_busy(due.action_id):
                decisions.append(Decision(due, None, fired=False, waiting=True))
                continue
            try:
                run = fire(due.org_id, due.action_id, new_trace_id())
            except Exception:  # noqa: BLE001 - one odd action must not hold up the others
                log.exception("scheduler: deciding action %s", due.action_id)
                continue
            decisions.append(Decision(due, rehearsal.take(), run is not None))
        return decisions

    # Writing (in a worker thread)
    def _plan(self, decisions: list[Decision]) -> Plan:
        writes = [decision for decision in decisions if decision.append is not None]
        groups, alone = _mergeable_groups(writes, self.actions_per_append)
        return Plan(decisions, groups, [merged([decision.write for decision in group]) for group in groups], alone)

    def _write(self, plans: list[Plan], now: datetime) -> int:
        """Writes the plans' decisions; an action whose append is refused (something it read has changed) is
        decided again the ordinary way. Returns how many runs were started."""
        groups = [group for plan in plans for group in plan.groups]
        appended = self._append_together([append for plan in plans for append in plan.merged])
        alone = [decision for plan in plans for decision in plan.alone]
        # A refused group does not say which of its actions was refused: each tries on its own.
        alone += [decision for group, ok in zip(groups, appended, strict=True) if not ok for decision in group]
        appended = self._workers.map(self._append, [decision.write for decision in alone])
        refused = {decision.due.action_id: decision for decision, ok in zip(alone, appended, strict=True) if not ok}
        started = 0
        for decision in (decision for plan in plans for decision in plan.decisions):
            if decision.due.action_id not in refused:
                self._settle(decision.due, now + self.recheck)
                started += decision.fired
        return started + self._decide_again(list(refused.values()), now)

    def _append_together(self, appends: list[Append]) -> list[bool]:
        """Each append's outcome (False: refused), committed in as few transactions as `events_per_commit` allows.
        A slot's fires committed in one transaction land together, close to the slot; split into many, each
        would wait for the table lock behind the others while the relay, projector and executor, woken by the
        first, take the CPU, and the last would land seconds late
        (BENCHMARKS.md, "Appendix: why the code is the way it is"). The price: other writers wait for the lock
        while the slot's transaction runs."""
        outcomes: list[bool] = []
        for chunk in chunks(appends, self.events_per_commit):
            for future in self.store.append_together(chunk):
                try:
                    future.result()
                except ConcurrencyConflict:
                    outcomes.append(False)
                else:
                    outcomes.append(True)
        return outcomes

    def _append(self, append: Append) -> bool:
        """False when the append was refused: a stream it writes or read has moved since."""
        try:
            self.store.append(append)
        except ConcurrencyConflict:
            return False
        return True

    def _decide_again(self, refused: list[Decision], now: datetime) -> int:
        def fire(decision: Decision) -> bool:
            due = decision.due
            run = self._fire(due.org_id, due.action_id, new_trace_id())
            self._settle(due, now + self.recheck)
            return run is not None

        return sum(self._workers.map(fire, refused))


class Snapshot:
    """The streams deciding a page of actions reads: the actions, then their workspaces, apps, previous runs and
    the runs their due slots would start. Two queries, whatever the page's size."""

    def __init__(self, store: EventStore, page: list[Due]) -> None:
        self.streams = store.load_many([due.action_id for due in page])
        fold = store.codec.fold
        self._previous_runs: dict[str, str] = {}
        wanted = set()
        for due in page:
            action, _ = fold(ACTION, self.streams[due.action_id])
            if action is None:
                continue
            wanted |= {action.workspace_id, action.app_id}
            if action.last_run_id:
                wanted.add(action.last_run_id)
                self._previous_runs[action.action_id] = action.last_run_id
            if action.next_run_at is not None:
                wanted.add(scheduled_run_id(action.action_id, action.next_run_at))
        self.streams.update(store.load_many(sorted(wanted - self.streams.keys())))
        self._fold = fold

    def previous_run_busy(self, action_id: str) -> bool:
        run_id = self._previous_runs.get(action_id)
        if run_id is None:
            return False
        run, _ = self._fold(RUN, self.streams[run_id])
        return previous_run_busy(run)


def _by_slot(rows: Iterable[Due]) -> Iterator[tuple[datetime, list[Due]]]:
    slots: dict[datetime, list[Due]] = {}
    for due in rows:
        slots.setdefault(due.next_run_at, []).append(due)
    return iter(sorted(slots.items()))


def _mergeable_groups(decisions: list[Decision], size: int) -> tuple[list[list[Decision]], list[Decision]]:
    """Groups of up to `size` decisions whose appends can share one (`eventstore.batching`), and the decisions
    that fit no group, to be appended alone."""
    groups: list[list[Decision]] = []
    alone: list[Decision] = []
    group: list[Decision] = []
    commit = Commit()
    for decision in decisions:
        writes = written(decision.write)
        if not commit.admits(decision.write, writes):
            alone.append(decision)
            continue
        group.append(decision)
        commit.add(decision.write, writes)
        if len(group) == size:
            groups.append(group)
            group, commit = [], Commit()
    if group:
        groups.append(group)
    return groups, alone
