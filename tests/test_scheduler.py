"""The scheduler against real PostgreSQL and the live views, with an injected clock: no sleeping
through minutes."""

from __future__ import annotations

import asyncio
import secrets
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
import pytest
from msgspec.structs import replace
from psycopg_pool import AsyncConnectionPool

import migrations
from commands.actions import create_action, finish_attempt, fire_schedule_on, set_enabled, start_attempt
from commands.unit_of_work import CommandRunner, Context
from domain.action import ACTION
from domain.aggregates import AGGREGATES
from domain.events import SYSTEM_ACTOR
from domain.run import RUN, AttemptOutcome
from eventstore import Codec
from eventstore.postgres import EVENTS_TABLE, PostgresEventStore, datastore_from_url
from pipeline import positions
from projections.actions import runnable_runs
from scheduler.scheduler import Scheduler
from tests.conftest import ROOT_TOKEN, RunningRoles, migrated_settings, position_of, scratch_database
from tests.support import eventually, eventually_async


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def world(api, org, settings):
    """A catalog made through HTTP, and an action scheduled in 2030 (so the live scheduler leaves it alone).
    Ticks at 2030 also fire other tests' actions, so the tests count this action's runs, not ticks."""
    workspace = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "cron"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{workspace}"
    app_id = api.post(f"{base}/apps", json={"name": "bot"}).json()["app_id"]
    namespace = api.post(f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
    made = api.post(f"{base}/endpoints", json={"app_id": app_id, "name": "echo"})
    clock = Clock(datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC))
    store = PostgresEventStore(datastore_from_url(settings.database_url), Codec(AGGREGATES))
    commands = CommandRunner(store, clock)
    ctx = Context(org_id=org, actor=SYSTEM_ACTOR, trace_id=secrets.token_hex(16))
    fields = {
        "name": "every minute",
        "endpoint_id": made.json()["endpoint_id"],
        "namespace_id": namespace,
        "action_type": "scheduled",
        "schedule_type": "cron",
        "cron_expression": "* * * * *",
    }
    action = create_action(commands, ctx, workspace, app_id, fields)
    yield {
        "app": app_id,
        "ctx": ctx,
        "fields": fields,
        "ws": workspace,
        "org": org,
        "clock": clock,
        "commands": commands,
        "action_id": action.state.action_id,
        "store": store,
        "settings": settings,
        "position": action.position,
        "first": position_of(made),
    }
    store.close()


def scheduler_of(world, pool, database_url: str, **options) -> Scheduler:
    commands = world["commands"]
    return Scheduler(commands.store, fire_schedule_on(), pool, database_url, clock=commands.clock, **options)


def run_async(settings, scenario):
    async def main():
        async with AsyncConnectionPool(settings.database_url, open=False, kwargs={"autocommit": True}) as pool:
            return await scenario(pool)

    return asyncio.run(main())


async def views_reach(pool, position: int) -> None:
    async def reached() -> int:
        async with pool.connection() as conn:
            return (await positions.read_positions(conn, ["actions"]))["actions"]

    await eventually_async(
        reached, until=lambda at: at >= position, interval=0.02, what=f"the actions view to reach {position}"
    )


def action_events(world, action_id: str | None = None) -> list[str]:
    return [e.topic for e in world["store"].load(action_id or world["action_id"])]


def more_actions(world, count: int) -> tuple[list[str], int]:
    """`count` more every-minute actions in the world's app; their ids and the position of the last."""
    made = [
        create_action(world["commands"], world["ctx"], world["ws"], world["app"], world["fields"]) for _ in range(count)
    ]
    return [outcome.state.action_id for outcome in made], made[-1].position


def fired_runs(world, action_id: str | None = None) -> list:
    runs = []
    for stored in world["store"].load(action_id or world["action_id"]):
        meta, event = world["store"].codec.decode(stored.topic, stored.state)
        if stored.topic == "ScheduledRunFired":
            state, _ = world["commands"].load(RUN, event.run_id, world["org"])
            runs.append((event, state))
    return runs


def finish_runs(world, action_id: str | None = None) -> None:
    for _, run in fired_runs(world, action_id):
        if not run.finished:
            started = start_attempt(world["commands"], world["org"], run.run_id, 60, "t")
            finish_attempt(world["commands"], world["org"], run.run_id, "t", started.attempt, AttemptOutcome())


def test_each_slot_fires_once_even_with_two_schedulers(world):
    settings, clock = world["settings"], world["clock"]
    # The action's first slot is 12:01; the clock says 12:00:30.

    async def scenario(pool):
        one = scheduler_of(world, pool, settings.database_url)
        two = scheduler_of(world, pool, settings.database_url)
        await views_reach(pool, world["position"])
        await one.tick()
        assert fired_runs(world) == []  # nothing due yet
        clock.now = datetime(2030, 1, 1, 12, 1, 0, 500_000, tzinfo=UTC)  # half a second after the slot
        await asyncio.gather(one.tick(), two.tick())
        await one.tick()  # the view may still show the old slot: the aggregate says no

    run_async(settings, scenario)
    [(fired, run)] = fired_runs(world)
    assert fired.slot == datetime(2030, 1, 1, 12, 1, tzinfo=UTC) and fired.missed_slots == 0
    assert (run.trigger_type, run.status) == ("scheduled", "pending")


def test_missed_slots_are_coalesced_and_busy_slots_skipped(world):
    settings, clock = world["settings"], world["clock"]

    async def scenario(pool):
        scheduler = scheduler_of(world, pool, settings.database_url)
        await views_reach(pool, world["position"])
        clock.now = datetime(2030, 1, 1, 12, 1, 0, tzinfo=UTC)
        await scheduler.tick()
        finish_runs(world)
        clock.now = datetime(2030, 1, 1, 12, 6, 10, tzinfo=UTC)  # down for five slots
        await views_reach(pool, world["store"].head())
        await scheduler.tick()
        clock.now = datetime(2030, 1, 1, 12, 7, 0, tzinfo=UTC)  # the 12:06 run has not finished
        await views_reach(pool, world["store"].head())
        await scheduler.tick()

    run_async(settings, scenario)
    runs = fired_runs(world)
    assert [(e.slot.minute, e.missed_slots) for e, _ in runs] == [(1, 0), (6, 4)]
    assert action_events(world)[-1] == "ScheduledSlotSkipped"
    state, _ = world["commands"].load(ACTION, world["action_id"], world["org"])
    assert state.next_run_at == datetime(2030, 1, 1, 12, 8, tzinfo=UTC)
    assert runs[-1][1].run_id != runs[0][1].run_id


def test_the_live_scheduler_fires_a_once_action_on_time_and_the_executor_runs_it(api, org):
    workspace = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "once"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{workspace}"
    app_id = api.post(f"{base}/apps", json={"name": "bot"}).json()["app_id"]
    namespace = api.post(f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
    endpoint_id = api.post(f"{base}/endpoints", json={"app_id": app_id, "name": "echo"}).json()["endpoint_id"]
    slot = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    created = api.post(
        f"{base}/apps/{app_id}/actions",
        json={
            "name": "soon",
            "endpoint_id": endpoint_id,
            "namespace_id": namespace,
            "action_type": "scheduled",
            "schedule_type": "once",
            "scheduled_at": slot.isoformat(),
        },
    )
    assert created.status_code == 201, created.text
    action = created.json()
    runs_url = f"{base}/apps/{app_id}/actions/{action['action_id']}/runs"

    def listed_runs() -> list:
        listed = api.get(runs_url)
        return listed.json()["runs"] if listed.status_code == 200 else []

    runs = eventually(
        listed_runs, until=lambda runs: runs and runs[0]["status"] == "success", timeout=15, what="a successful run"
    )
    [run] = runs
    assert (run["trigger_type"], run["status"]) == ("scheduled", "success")
    assert timedelta(0) <= datetime.fromisoformat(run["triggered_at"]) - slot < timedelta(seconds=1)
    got = api.get(f"{base}/apps/{app_id}/actions/{action['action_id']}").json()
    assert got["next_run_at"] is None


def test_an_action_whose_workspace_is_gone_stops_firing(world, api):
    settings, clock = world["settings"], world["clock"]
    deleted = api.delete(f"/v1/orgs/{world['org']}/workspaces/{world['ws']}")
    assert deleted.status_code == 200

    async def scenario(pool):
        await views_reach(pool, int(deleted.headers["X-Event-Position"]))
        clock.now = datetime(2030, 1, 1, 12, 1, 0, tzinfo=UTC)
        await scheduler_of(world, pool, settings.database_url).tick()

    run_async(settings, scenario)
    assert fired_runs(world) == [] and action_events(world)[-1] == "ActionDeleted"


def test_fires_decided_ahead_are_written_at_their_slot_and_not_before(world):
    settings, clock = world["settings"], world["clock"]
    slot = datetime(2030, 1, 1, 12, 1, tzinfo=UTC)

    async def scenario(pool):
        scheduler = scheduler_of(world, pool, settings.database_url)
        await views_reach(pool, world["position"])
        await scheduler.tick()  # 12:00:30: the 12:01 slot is within the look-ahead
        assert fired_runs(world) == []  # decided, held, not written
        clock.now = slot - timedelta(microseconds=1)
        await scheduler.tick()
        assert fired_runs(world) == []
        clock.now = slot + timedelta(milliseconds=3)
        assert scheduler._pause() == 0  # the held fire wakes the scheduler at its slot, not a poll later
        await scheduler.tick()

    run_async(settings, scenario)
    [(fired, run)] = fired_runs(world)
    assert (fired.slot, fired.missed_slots, run.triggered_at) == (slot, 0, slot)


def test_a_held_fire_is_decided_again_when_the_action_changed_before_its_slot(world):
    settings, clock = world["settings"], world["clock"]

    async def scenario(pool):
        scheduler = scheduler_of(world, pool, settings.database_url)
        await views_reach(pool, world["position"])
        await scheduler.tick()  # the 12:01 fire is held
        set_enabled(world["commands"], world["ctx"], world["ws"], world["app"], world["action_id"], False)
        clock.now = datetime(2030, 1, 1, 12, 1, 0, 100_000, tzinfo=UTC)
        await scheduler.tick()  # its append is refused (the action moved); the aggregate says: disabled

    run_async(settings, scenario)
    assert fired_runs(world) == [] and action_events(world)[-1] == "ActionDisabled"


def test_many_actions_of_one_slot_fire_once_each_with_two_schedulers(world):
    settings, clock = world["settings"], world["clock"]
    actions, last = more_actions(world, 40)

    async def scenario(pool):
        ahead = scheduler_of(world, pool, settings.database_url, batch=7, actions_per_append=5)
        late = scheduler_of(world, pool, settings.database_url, batch=11)
        await views_reach(pool, int(last))
        await ahead.tick()  # holds the 12:01 fires, in pages and merged appends
        clock.now = datetime(2030, 1, 1, 12, 1, 0, 200_000, tzinfo=UTC)
        await asyncio.gather(ahead.tick(), late.tick())  # the late one decides the same slot from scratch

    run_async(settings, scenario)
    for action_id in [world["action_id"], *actions]:
        [(fired, run)] = fired_runs(world, action_id)
        assert fired.slot == datetime(2030, 1, 1, 12, 1, tzinfo=UTC) and run.status == "pending"


def fire_transactions(world, action_ids: list[str]) -> list[int]:
    """How many events each transaction that wrote these actions' fires wrote, by the rows' xmin."""
    with psycopg.connect(world["settings"].database_url) as conn:
        rows = conn.execute(
            f"SELECT count(*) FROM {EVENTS_TABLE} WHERE xmin IN (SELECT xmin FROM {EVENTS_TABLE} "
            "WHERE originator_id = ANY(%s) AND topic = 'ScheduledRunFired') GROUP BY xmin::text",
            (action_ids,),
        ).fetchall()
    return sorted(count for (count,) in rows)


@pytest.mark.parametrize("events_per_commit", [25_000, 20])
def test_the_fires_of_a_slot_commit_together_up_to_a_size(world, events_per_commit):
    """Held in pages and merged appends, a slot's fires commit in one transaction (or in transactions of at
    most `events_per_commit` events): twenty transactions queued for the table lock behind each other while
    the first ones' readers took the CPU, and the last landed seconds after the slot."""
    settings, clock = world["settings"], world["clock"]
    actions, last = more_actions(world, 30)
    actions.append(world["action_id"])

    async def scenario(pool):
        scheduler = scheduler_of(
            world, pool, settings.database_url, batch=7, actions_per_append=5,
            events_per_commit=events_per_commit,
        )  # fmt: skip
        await views_reach(pool, int(last))
        await scheduler.tick()  # holds the 12:01 fires: 5 pages, each in merged appends of 5 actions
        clock.now = datetime(2030, 1, 1, 12, 1, 0, 200_000, tzinfo=UTC)
        await scheduler.tick()

    run_async(settings, scenario)
    assert all(len(fired_runs(world, action_id)) == 1 for action_id in actions)
    sizes = fire_transactions(world, actions)  # (ticks in 2030 fire earlier tests' actions too)
    assert sum(sizes) >= 2 * len(actions)  # a fire and its run's request each
    if events_per_commit > sum(sizes):
        assert len(sizes) == 1, sizes
    else:
        assert len(sizes) > 1 and max(sizes) <= events_per_commit, sizes


def test_a_run_that_finishes_before_the_next_slot_lets_it_fire_on_time(world):
    """Ahead of a slot, an action whose previous run is still busy waits rather than being decided "skip";
    once the run has finished it is decided and held like any other."""
    settings, clock = world["settings"], world["clock"]

    async def scenario(pool):
        scheduler = scheduler_of(world, pool, settings.database_url)
        await views_reach(pool, world["position"])
        clock.now = datetime(2030, 1, 1, 12, 1, 0, tzinfo=UTC)
        await scheduler.tick()  # fires 12:01; its run is pending
        clock.now = datetime(2030, 1, 1, 12, 1, 40, tzinfo=UTC)
        await views_reach(pool, world["store"].head())
        await scheduler.tick()  # 12:02 is ahead, the 12:01 run busy: nothing decided
        assert [e.slot.minute for e, _ in fired_runs(world)] == [1]
        finish_runs(world)
        clock.now = datetime(2030, 1, 1, 12, 1, 44, tzinfo=UTC)  # past the busy re-check
        await scheduler.tick()  # decided and held
        clock.now = datetime(2030, 1, 1, 12, 2, 0, 500_000, tzinfo=UTC)
        await scheduler.tick()

    run_async(settings, scenario)
    runs = fired_runs(world)
    assert [(e.slot.minute, e.missed_slots) for e, _ in runs] == [(1, 0), (2, 0)]
    assert runs[1][1].triggered_at == runs[1][0].slot  # decided ahead, as of its slot
    assert "ScheduledSlotSkipped" not in action_events(world)


def test_runnable_runs_take_orgs_in_turn_and_give_an_org_no_more_than_its_share(server_urls):
    now = datetime(2030, 6, 1, tzinfo=UTC)
    runs = [(f"run_a{i}", "org-a", "pending", now - timedelta(minutes=10 - i), None) for i in range(6)]
    runs += [
        ("run_a_busy", "org-a", "running", now - timedelta(hours=1), now + timedelta(minutes=1)),  # lease held
        ("run_b", "org-b", "pending", now - timedelta(seconds=1), None),
        ("run_c_lost", "org-c", "running", now - timedelta(hours=1), now - timedelta(seconds=1)),  # lease expired
        ("run_d_later", "org-d", "pending", now + timedelta(minutes=1), None),
        ("run_e_done", "org-e", "success", now - timedelta(hours=2), None),
    ]

    async def due(url: str, limit: int) -> list[tuple[str, str]]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await runnable_runs(conn, now, limit, 3)

    with scratch_database(server_urls[0], "mm_runs") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(migrations.ddl("actions"))
            conn.cursor().executemany("INSERT INTO rm_runs VALUES (%s, %s, 'a', 0, %s, %s, %s, '')", runs)
        first, every = asyncio.run(due(url, 3)), asyncio.run(due(url, 100))
    assert first == [("org-c", "run_c_lost"), ("org-a", "run_a0"), ("org-b", "run_b")]  # each org's oldest first
    assert every == [*first, ("org-a", "run_a1")]  # org-a's share is 3, and one of its attempts is running


class HeldEndpoint:
    """A local HTTP endpoint that holds every call until the test releases them, counting the calls in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_flight = self.most = 0
        lock = threading.Lock()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    held.in_flight += 1
                    held.most = max(held.most, held.in_flight)
                held.release.wait(60)
                with lock:
                    held.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/run"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def an_action(client: httpx.Client, org: str, url: str | None) -> str:
    """The runs URL of a new action in a new workspace of `org`, calling `url` (None: the echo executor)."""
    workspace = client.post(f"/v1/orgs/{org}/workspaces", json={"name": "fair"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{workspace}"
    app_id = client.post(f"{base}/apps", json={"name": "bot"}).json()["app_id"]
    namespace = client.post(f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
    endpoint = {"app_id": app_id, "name": "e", **({"url": url} if url else {})}
    endpoint_id = client.post(f"{base}/endpoints", json=endpoint).json()["endpoint_id"]
    action = {"name": "a", "endpoint_id": endpoint_id, "namespace_id": namespace}
    action_id = client.post(f"{base}/apps/{app_id}/actions", json=action).json()["action_id"]
    return f"{base}/apps/{app_id}/actions/{action_id}"


def test_one_org_with_slow_endpoints_leaves_room_for_the_others(server_urls, tmp_path):
    """Four slots, two per org: an org whose endpoint hangs holds two, and another org's run finishes meanwhile."""
    held = HeldEndpoint()
    with scratch_database(server_urls[0], "mm_fair") as url:
        settings = migrated_settings(url, server_urls[1], tmp_path)
        settings = replace(settings, executor_concurrency=4, executor_org_concurrency=2, executor_timeout=30)
        roles = RunningRoles(settings, {"api", "relay", "projector", "executor"}).start()
        auth = {"Authorization": f"Bearer {ROOT_TOKEN}"}
        try:
            with httpx.Client(base_url=roles.url, headers=auth, timeout=30) as client:
                slow, quick = an_action(client, "org-slow", held.url), an_action(client, "org-quick", None)
                slow_runs = [client.post(f"{slow}/trigger", json={}).json()["run_id"] for _ in range(6)]
                eventually(lambda: held.in_flight >= 2, timeout=15)
                quick_run = client.post(f"{quick}/trigger", json={}).json()["run_id"]
                quick_status = f"{quick}/runs/{quick_run}"
                eventually(lambda: client.get(quick_status).json().get("status") == "success", timeout=10)
                assert (held.in_flight, held.most) == (2, 2)  # the slow org's calls still hang, never more than 2
                held.release.set()
                for run in slow_runs:
                    eventually(
                        lambda run=run: client.get(f"{slow}/runs/{run}").json().get("status") == "success", timeout=15
                    )
            assert held.most == 2
        finally:
            held.release.set()
            roles.stop()
            held.server.shutdown()
