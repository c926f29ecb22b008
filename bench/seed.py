"""A database with a realistic event log and activity, made fast (no HTTP) and kept for reuse.

Events come from the domain's own aggregates: scripted workspace lives (catalog, environments and
deploys, actions and their runs, tokens) across orgs of very different sizes, decided and evolved in
memory as a use case would, interleaved, and appended through the event store in large batches (its
trigger indexes and chains them as for any write). Activity records, shaped by the API's own request
classifier, go through the activity store's insert path. Then every view is built by the rebuild code
path, and the consumers that react to new events (relay, bucket provisioner) are placed at the head.

    python -m bench.seed --events 1000000 --activity 1000000 [--database NAME] [--data-dir DIR]

A seeded database is kept; the benchmarks reuse it when they are given the same sizes (or its name).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import queue
import random
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from eventsourcing.persistence import StoredEvent

from activity.recording import classify
from activity.records import ActivityRecord, decode_batch
from activity.store import store as store_records
from bench import harness
from commands.provisioning import BucketProvisioner, bucket_name
from commands.tokens import hash_secret
from domain.action import ACTION, ActionConfig, CreateAction, FireSchedule, UpdateAction, run_request
from domain.aggregates import AGGREGATES
from domain.catalog import CATALOG, AddItem, ChangeItem
from domain.environment import ENVIRONMENT, CreateEnvironment, DeployRelease, UndeployApp, environments_stream
from domain.events import SYSTEM_ACTOR, Actor, AggregateType, EventMeta
from domain.run import RUN, AttemptOutcome, FinishAttempt, StartAttempt
from domain.token import TOKEN, IssueToken, RevokeToken
from domain.workspace import (
    REGIONS,
    WORKSPACE,
    CreateWorkspace,
    DeleteWorkspace,
    RecordBucketProvisioned,
    UpdateWorkspace,
)
from eventstore import Append, Claim, Codec, EventStore
from eventstore.postgres import PostgresEventStore, datastore_from_url
from mechamental.bootstrap import read_models
from pipeline import positions
from projections.rebuild import progress_bar, rebuild

EVENTS_PER_WORKSPACE = 200  # on average; busy workspaces have many more, most have fewer
WORKSPACES_PER_ORG = 20  # on average; org sizes follow a long tail
LOG_SPAN = timedelta(days=30)  # the log's events are spread over this, ending now
ACTIVITY_SPAN = timedelta(days=7)
READER_TOKEN = "bench-reader"  # a viewer token per org, for the read benchmark
_READER_KEY = b"mechamental-bench-reader"


def reader_secret(token_id: str) -> str:
    """The reader tokens' secrets derive from their ids, so the read benchmark can present them later."""
    return hmac.new(_READER_KEY, token_id.encode(), hashlib.sha256).hexdigest()


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6)
    sys.stderr.write(f"\r{label:<10} {done:>10,}/{total:,}  {rate:>9,.0f}/s ")
    sys.stderr.flush()


class EventLog:
    """Runs commands on the domain's aggregates in memory, as a use case's transaction would, and appends
    their events through the event store in large batches from a writer thread (so deciding the next batch
    overlaps with storing this one)."""

    def __init__(self, store: EventStore, total: int, batch_events: int = 5000) -> None:
        self.store = store
        self.total = total
        self.batch_events = batch_events
        self.states: dict[str, tuple[Any, int]] = {}
        self.decided = 0
        self.written = 0
        self._events: list[StoredEvent] = []
        self._claims: list[Claim] = []
        self._batches: queue.Queue[Append | None] = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._started = time.monotonic()
        self._writer = threading.Thread(target=self._write, name="seed-writer")
        self._writer.start()

    def state(self, stream_id: str) -> Any:
        return self.states.get(stream_id, (None, 0))[0]

    def decide(self, kind: AggregateType, stream_id: str, command: Any, meta: EventMeta) -> int:
        """Returns how many events the command caused."""
        state, version = self.states.get(stream_id, (None, 0))
        events = kind.decide(state, command)
        for event in events:
            state = kind.evolve(state, event, meta)
            version += 1
            self._events.append(StoredEvent(stream_id, version, *self.store.codec.encode(event, meta)))
        self.states[stream_id] = (state, version)
        self.decided += len(events)
        return len(events)

    def claim(self, claim: Claim) -> None:
        self._claims.append(claim)

    def forget(self, stream_id: str) -> None:
        """A finished run is never touched again: keep memory flat."""
        self.states.pop(stream_id, None)

    def maybe_flush(self) -> None:
        if len(self._events) >= self.batch_events:
            self.flush()

    def flush(self) -> None:
        if self._failure is not None:
            raise RuntimeError("the seed writer failed") from self._failure
        if self._events:
            self._batches.put(Append(self._events, claims=self._claims))
            self._events, self._claims = [], []

    def close(self) -> None:
        self.flush()
        self._batches.put(None)
        self._writer.join()
        if self._failure is not None:
            raise RuntimeError("the seed writer failed") from self._failure

    def _write(self) -> None:
        try:
            while (append := self._batches.get()) is not None:
                self.store.append(append)
                self.written += len(append.events)
                progress("events", self.written, self.total, self._started)
        except BaseException as error:  # noqa: BLE001 - raised again in the deciding thread
            self._failure = error
            while self._batches.get() is not None:  # let the deciding thread finish putting
                pass


class Org:
    def __init__(self, org_id: str, users: list[str]) -> None:
        self.org_id = org_id
        self.users = users
        self.workspaces: list[Workspace] = []


class Workspace:
    """What a workspace's life has made so far: the ids later commands (and activity paths) point at."""

    def __init__(self, org: Org, workspace_id: str) -> None:
        self.org = org
        self.workspace_id = workspace_id
        self.apps: list[str] = []
        self.releases: dict[str, list[str]] = {}  # app id -> its releases, oldest first
        self.endpoints: dict[str, list[str]] = {}
        self.namespaces: list[str] = []
        self.sources: list[str] = []
        self.environments: list[str] = []
        self.trigger_actions: list[tuple[str, str]] = []  # (app id, action id)
        self.scheduled_actions: list[tuple[str, str]] = []
        self.events = 0


SET_UP_EVENTS = 32  # what `_set_up` and the workspace's creation write


class Workload:
    """Workspace lives, interleaved the way concurrent users interleave them, on a clock that spreads the
    log over LOG_SPAN."""

    def __init__(self, log: EventLog, events: int, rng: random.Random) -> None:
        self.log = log
        self.rng = rng
        self.events = events
        workspaces = max(4, events // EVENTS_PER_WORKSPACE)
        org_count = max(2, workspaces // WORKSPACES_PER_ORG)
        self.orgs = [Org(f"bench-org-{i:04d}", [f"user-{i:04d}-{u}" for u in range(5)]) for i in range(org_count)]
        # A long tail: org i gets a share proportional to 1/(i+1); every org gets at least one workspace.
        weights = [1 / (rank + 1) for rank in range(org_count)]
        self.workspace_orgs = self.orgs + rng.choices(self.orgs, weights, k=max(0, workspaces - org_count))
        rng.shuffle(self.workspace_orgs)
        self.now = datetime.now(UTC) - LOG_SPAN
        self.step = LOG_SPAN / events
        # Scheduled actions fire about as often as the simulated clock lets a life look at them (about every 3500
        # events), so a tick finds a slot or two due: as with a scheduler that runs, not one back after a week.
        hours = min(24, max(1, round(3500 * self.step.total_seconds() / 3600)))
        self.cron = "0 * * * *" if hours == 1 else f"0 */{hours} * * *" if hours < 24 else "0 0 * * *"
        self.steps = [
            (self._run, 60),
            (self._scheduled_run, 8),
            (self._deploy, 8),
            (self._new_release, 4),
            (self._index_source, 6),
            (self._change_workspace, 4),
            (self._change_action, 3),
            (self._new_thread, 3),
            (self._undeploy, 2),
        ]

    def run(self) -> None:
        for org in self.orgs:
            self._tokens(org)
        mean = max(10.0, (self.events - self.log.decided) / len(self.workspace_orgs) - SET_UP_EVENTS)
        lives = (self._life(org, int(self.rng.expovariate(1 / mean))) for org in self.workspace_orgs)
        active: list[Iterator[None]] = list(itertools.islice(lives, 64))
        while active:
            index = self.rng.randrange(len(active))
            if next(active[index], StopIteration) is StopIteration:
                replacement = next(lives, None)
                if replacement is None:
                    active.pop(index)
                else:
                    active[index] = replacement
            self.log.maybe_flush()

    def _decide(self, org: Org, kind: AggregateType, stream_id: str, command: Any, actor: Actor | None) -> int:
        if actor is None:
            user = self.rng.choice(org.users)
            actor = Actor(principal_type="user", principal_id=user, user_id=user)
        caused = self.log.decide(
            kind, stream_id, command, EventMeta(org.org_id, actor, secrets.token_hex(16), self.now)
        )
        self.now += self.step * caused
        return caused

    def _do(self, ws: Workspace, kind: AggregateType, stream_id: str, command: Any, actor: Actor | None = None) -> Any:
        """Runs a command of the workspace's life; returns the stream's new state."""
        ws.events += self._decide(ws.org, kind, stream_id, command, actor)
        return self.log.state(stream_id)

    def _tokens(self, org: Org) -> None:
        for role in ("owner", "member", "auditor"):
            token_id = _id("tok")
            secret_hash = hash_secret(secrets.token_hex(8))
            self._decide(org, TOKEN, token_id, IssueToken(token_id, f"{role} key", role, secret_hash), None)
        self._decide(org, TOKEN, token_id, RevokeToken(), None)
        token_id = _id("tok")
        reader = IssueToken(token_id, READER_TOKEN, "viewer", hash_secret(reader_secret(token_id)))
        self._decide(org, TOKEN, token_id, reader, None)

    def _life(self, org: Org, budget: int) -> Iterator[None]:
        ws = Workspace(org, _id("ws"))
        tags = self.rng.sample(["ml", "prod", "staging", "research", "team-a", "team-b", "gpu"], k=2)
        name, region = f"workspace {len(org.workspaces)}", self.rng.choice(REGIONS)
        create = CreateWorkspace(ws.workspace_id, org.org_id, name, org.users[0], tags=tags, region=region)
        self._do(ws, WORKSPACE, ws.workspace_id, create)
        org.workspaces.append(ws)
        yield
        provisioned = RecordBucketProvisioned(bucket_name(ws.workspace_id))
        self._do(ws, WORKSPACE, ws.workspace_id, provisioned, SYSTEM_ACTOR)
        yield
        yield from self._set_up(ws)
        functions, weights = zip(*self.steps, strict=True)
        while ws.events < SET_UP_EVENTS + budget:
            yield from self.rng.choices(functions, weights)[0](ws)
        if self.rng.random() < 0.02:
            self._do(ws, WORKSPACE, ws.workspace_id, DeleteWorkspace())
            org.workspaces.remove(ws)

    def _item(self, ws: Workspace, kind: str, fields: dict[str, Any]) -> str:
        item_id = _id(kind.removesuffix("s"))
        self._do(ws, CATALOG, item_id, AddItem(item_id, kind, ws.workspace_id, fields))
        return item_id

    def _release(self, ws: Workspace, app_id: str) -> None:
        version = f"1.{len(ws.releases[app_id])}.0"
        release_id = self._item(ws, "releases", {"app_id": app_id, "version": version, "notes": "seeded"})
        self.log.claim(Claim(f"releases.version:{app_id}", version, release_id))
        ws.releases[app_id].append(release_id)

    def _set_up(self, ws: Workspace) -> Iterator[None]:
        for n in range(2):
            app_id = self._item(ws, "apps", {"name": f"app {n}", "description": "a seeded app"})
            ws.apps.append(app_id)
            ws.releases[app_id], ws.endpoints[app_id] = [], []
            yield
            for _ in range(2):
                self._release(ws, app_id)
                yield
            for e in range(2):
                ws.endpoints[app_id].append(self._item(ws, "endpoints", {"app_id": app_id, "name": f"endpoint {e}"}))
                yield
            self._item(ws, "augmentations", {"app_id": app_id, "name": "aug", "type": "retrieval"})
            yield
        ws.namespaces = [self._item(ws, "namespaces", {"name": "docs"}), self._item(ws, "namespaces", {"name": "chat"})]
        for n in range(2):
            self._item(ws, "threads", {"namespace_id": ws.namespaces[1], "title": f"thread {n}"})
        for n in range(3):
            ws.sources.append(self._item(ws, "sources", {"name": f"source {n}", "namespace_id": ws.namespaces[0]}))
        for n in range(2):
            self._item(ws, "secrets", {"name": f"secret {n}", "type": "api_key"})
        self._item(ws, "models", {"name": "model", "provider": "openai"})
        yield
        stream = environments_stream(ws.workspace_id)
        for name in ("production", "staging", "development"):
            environment_id = _id("env")
            self._do(ws, ENVIRONMENT, stream, CreateEnvironment(ws.workspace_id, environment_id, name))
            ws.environments.append(environment_id)
            yield
        for app_id in ws.apps:
            ws.trigger_actions.append((app_id, self._action(ws, app_id, {})))
            cron = {"action_type": "scheduled", "schedule_type": "cron", "cron_expression": self.cron}
            ws.scheduled_actions.append((app_id, self._action(ws, app_id, cron)))
            yield

    def _action(self, ws: Workspace, app_id: str, schedule: dict[str, Any]) -> str:
        action_id = _id("act")
        config = ActionConfig(
            name=f"action {len(ws.trigger_actions) + len(ws.scheduled_actions)}",
            endpoint_id=self.rng.choice(ws.endpoints[app_id]),
            namespace_id=ws.namespaces[1],
            payload={"prompt": "summarise", "max_tokens": 512},
            **schedule,
        )
        self._do(ws, ACTION, action_id, CreateAction(action_id, ws.workspace_id, app_id, config, self.now))
        return action_id

    def _run(self, ws: Workspace, scheduled: tuple[str, str, str] | None = None) -> Iterator[None]:
        """A manual run of a trigger action, or the run of a scheduled slot (app, action, run id)."""
        _, action_id, run_id = scheduled or (*self.rng.choice(ws.trigger_actions), _id("run"))
        action = self.log.state(action_id)
        request = run_request(action, run_id, "scheduled" if scheduled else "manual", self.now, {}, None)
        self._do(ws, RUN, run_id, request, SYSTEM_ACTOR if scheduled else None)
        yield
        self._do(ws, RUN, run_id, StartAttempt(self.now, 65.0), SYSTEM_ACTOR)
        yield
        failed = self.rng.random() < 0.1
        usage = {"input": self.rng.randrange(50, 2000), "output": self.rng.randrange(10, 800)}
        outcome = AttemptOutcome(
            error_code="HTTP_502" if failed else None,
            error_message="Bad gateway" if failed else None,
            stages_completed=3,
            total_stages=3,
            token_usage=None if failed else usage,
        )
        finish = FinishAttempt(1, self.now, outcome)
        self._do(ws, RUN, run_id, finish, SYSTEM_ACTOR)
        self.log.forget(run_id)
        yield

    def _scheduled_run(self, ws: Workspace) -> Iterator[None]:
        app_id, action_id = self.rng.choice(ws.scheduled_actions)
        tick = FireSchedule(now=self.now, previous_run_busy=False)
        before = self.log.state(action_id).last_run_id
        fired = self._do(ws, ACTION, action_id, tick, SYSTEM_ACTOR).last_run_id
        if fired != before:
            yield from self._run(ws, (app_id, action_id, fired))
        else:
            yield

    def _deploy(self, ws: Workspace) -> Iterator[None]:
        environment_id, app_id = self.rng.choice(ws.environments), self.rng.choice(ws.apps)
        stream = environments_stream(ws.workspace_id)
        active = self.log.state(stream).environments[environment_id].active_deployments.get(app_id)
        releases = ws.releases[app_id]
        candidates = [r for r in releases if r != active]
        release_id = candidates[-1] if self.rng.random() < 0.8 else self.rng.choice(candidates)
        older = active is not None and releases.index(release_id) < releases.index(active)
        deploy = DeployRelease(environment_id, _id("dep"), app_id, release_id, older_than_active=older)
        self._do(ws, ENVIRONMENT, stream, deploy)
        yield

    def _undeploy(self, ws: Workspace) -> Iterator[None]:
        environment_id, app_id = self.rng.choice(ws.environments), self.rng.choice(ws.apps)
        stream = environments_stream(ws.workspace_id)
        if app_id in self.log.state(stream).environments[environment_id].active_deployments:
            self._do(ws, ENVIRONMENT, stream, UndeployApp(environment_id, _id("dep"), app_id))
        yield

    def _new_release(self, ws: Workspace) -> Iterator[None]:
        self._release(ws, self.rng.choice(ws.apps))
        yield

    def _index_source(self, ws: Workspace) -> Iterator[None]:
        chunks = self.rng.randrange(1, 500)
        status = self.rng.choice(["indexed", "indexed", "failed"])
        changes = {"status": status, "chunks": chunks, "tokens": chunks * 400}
        self._do(ws, CATALOG, self.rng.choice(ws.sources), ChangeItem(changes))
        yield

    def _change_workspace(self, ws: Workspace) -> Iterator[None]:
        change = UpdateWorkspace(description=f"changed at {self.now:%Y-%m-%d %H:%M}")
        self._do(ws, WORKSPACE, ws.workspace_id, change)
        yield

    def _change_action(self, ws: Workspace) -> Iterator[None]:
        _, action_id = self.rng.choice(ws.trigger_actions)
        self._do(ws, ACTION, action_id, UpdateAction({"description": f"v{self.rng.randrange(100)}"}, self.now))
        yield

    def _new_thread(self, ws: Workspace) -> Iterator[None]:
        self._item(ws, "threads", {"namespace_id": ws.namespaces[1], "title": "a new thread"})
        yield


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(13)}"


# Requests as clients make them: (method, path under the workspace, status codes to draw from).
REQUESTS = [
    ("GET", "", (200,) * 20 + (404,)),
    ("GET", "/apps", (200,)),
    ("GET", "/environments", (200,)),
    ("GET", "/apps/{app}/actions", (200,)),
    ("GET", "/activity", (200,)),
    ("POST", "/apps/{app}/actions/{action}/trigger", (202,) * 10 + (409, 422)),
    ("POST", "/environments/{environment}/deploy", (200,) * 8 + (409,)),
    ("PUT", "", (200,) * 9 + (422,)),
    ("POST", "/sources", (201,) * 9 + (422,)),
]
REQUEST_WEIGHTS = [30, 15, 10, 10, 5, 12, 5, 3, 3]


def activity_records(workload: Workload, count: int, rng: random.Random) -> Iterator[ActivityRecord]:
    """Requests and execution attempts over the last ACTIVITY_SPAN, by org size, classified as the API's
    activity middleware classifies them."""
    workspaces = [ws for org in workload.orgs for ws in org.workspaces]
    now = datetime.now(UTC)
    span = ACTIVITY_SPAN.total_seconds()
    for _ in range(count):
        ws = rng.choice(workspaces)
        org, user = ws.org, rng.choice(ws.org.users)
        app_id = rng.choice(ws.apps)
        at = now - timedelta(seconds=rng.uniform(0, span))
        duration = round(rng.lognormvariate(1.5, 0.8), 3)
        if rng.random() < 0.1:  # an execution attempt, recorded by the executor
            failed = rng.random() < 0.1
            yield ActivityRecord(
                id="actv_" + secrets.token_hex(12),
                org_id=org.org_id,
                timestamp=at,
                trace_id=secrets.token_hex(16),
                action="execute",
                status_code=500 if failed else 200,
                success=not failed,
                duration_ms=duration * 100,
                workspace_id=ws.workspace_id,
                app_id=app_id,
                principal_type="system",
                principal_id="executor",
                resource_type="endpoint",
                resource_id=rng.choice(ws.endpoints[app_id]),
                error_code="HTTP_502" if failed else None,
                token_usage=None if failed else {"input": rng.randrange(50, 2000), "output": rng.randrange(10, 800)},
            )
            continue
        method, template, statuses = rng.choices(REQUESTS, REQUEST_WEIGHTS)[0]
        _, action_id = rng.choice([a for a in ws.trigger_actions if a[0] == app_id])
        rest = f"workspaces/{ws.workspace_id}" + template.format(
            app=app_id, action=action_id, environment=rng.choice(ws.environments)
        )
        found = classify(method, rest)
        status = rng.choice(statuses)
        yield ActivityRecord(
            id="actv_" + secrets.token_hex(12),
            org_id=org.org_id,
            timestamp=at,
            trace_id=secrets.token_hex(16),
            action=found["action"],
            status_code=status,
            success=status < 400,
            duration_ms=duration,
            user_id=user,
            workspace_id=found.get("workspace_id"),
            app_id=found.get("app_id"),
            principal_type="user",
            principal_id=user,
            token_type="api_token",
            method=method,
            path=f"/v1/orgs/{org.org_id}/{rest}",
            resource_type=found["resource_type"],
            resource_id=found["resource_id"],
            metadata={"query": "", "user_agent": "bench-seed"},
        )


async def store_activity(url: str, records: Iterator[ActivityRecord], total: int, batch: int = 5000) -> None:
    started, done = time.monotonic(), 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while chunk := list(itertools.islice(records, batch)):
            async with conn.transaction():
                await store_records(conn, chunk)
            done += len(chunk)
            progress("activity", done, total, started)
    sys.stderr.write("\n")


async def build_views(url: str, store: EventStore) -> None:
    """Every view, by the rebuild's code path (one pass over the log), swapped in."""
    await rebuild(url, store, read_models(), progress=progress_bar("views", sys.stderr))
    sys.stderr.write("\n")


async def place_reactors_at_head(url: str, head: int) -> None:
    """The seeded log is history: the relay and the bucket provisioner would otherwise work through all of it
    as soon as their role starts."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for name in (positions.RELAY, BucketProvisioner.name):
            await positions.lock_position(conn, name)
            await positions.save_position(conn, name, head)


SEEDED = "bench_seed"  # mm_settings key: present once a seed has completed


def seed(url: str, env: dict[str, str], events: int, activity_rows: int, rng: random.Random) -> None:
    harness.migrate(env)
    store = PostgresEventStore(datastore_from_url(url, pool_size=1, max_overflow=1), Codec(AGGREGATES))
    try:
        log = EventLog(store, events)
        workload = Workload(log, events, rng)
        try:
            workload.run()
        finally:
            log.close()
        sys.stderr.write("\n")
        asyncio.run(store_activity(url, activity_records(workload, activity_rows, rng), activity_rows))
        asyncio.run(build_views(url, store))
        head = store.head()
    finally:
        store.close()
    asyncio.run(place_reactors_at_head(url, head))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum would have done to a database that grew over weeks
        conn.execute(
            "INSERT INTO mm_settings (key, value) VALUES (%s, %s)",
            (SEEDED, msgspec.json.encode({"events": head, "activity": activity_rows}).decode()),
        )
    print(f"seeded: {head:,} events, {activity_rows:,} activity records", file=sys.stderr)


def seeded_name(events: int, activity_rows: int) -> str:
    return f"mm_bench_seed_{events}_{activity_rows}"


def is_seeded(server_url: str, name: str) -> bool:
    if not harness.database_exists(server_url, name):
        return False
    with psycopg.connect(harness.database_url(server_url, name)) as conn:
        exists = conn.execute("SELECT to_regclass('mm_settings') IS NOT NULL").fetchone()[0]
        return exists and conn.execute("SELECT 1 FROM mm_settings WHERE key = %s", (SEEDED,)).fetchone() is not None


def ensure_seeded(
    server_url: str, nats_url: str, data_dir: Path, name: str, events: int, activity_rows: int
) -> tuple[str, bool]:
    """The seeded database's URL, and whether this call made it (a half-made one is made again)."""
    if is_seeded(server_url, name):
        print(f"reusing seeded database {name}", file=sys.stderr)
        return harness.database_url(server_url, name), False
    harness.drop_database(server_url, name)
    url = harness.create_database(server_url, name)
    print(f"seeding {name}: {events:,} events, {activity_rows:,} activity records", file=sys.stderr)
    seed(url, harness.role_environment(url, nats_url, data_dir), events, activity_rows, random.Random(7))
    return url, True


@contextlib.contextmanager
def seeded_database(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """(database URL, NATS URL, database name) of the seeded database the arguments name, seeded
    first when needed; one this call seeded is dropped afterwards unless `args.keep`."""
    name = args.database or seeded_name(args.events, args.activity)
    with harness.servers(args.data_dir) as (server_url, nats_url):
        url, made = ensure_seeded(server_url, nats_url, args.data_dir, name, args.events, args.activity)
        try:
            yield url, nats_url, name
        finally:
            if made and not getattr(args, "keep", False):
                harness.drop_database(server_url, name)


@contextlib.contextmanager
def activity_taken_back(url: str) -> Iterator[None]:
    """Takes out, at the end, what the API recorded meanwhile (records from the start on, and the hourly rollups
    of those hours, remade from the records that stay), so that a rerun meets the database as seeded: every run
    adds some hundred thousand records, and searches over a growing table would slow from run to run. Then it
    vacuums what it deleted: a server with autovacuum off (this machine's was) would otherwise keep every run's
    rows as dead tuples, which searches step over (activity search fell from 789 to 628 requests a second over
    two runs that way)."""
    started = datetime.now(UTC)
    try:
        yield
    finally:
        asyncio.run(_take_back_activity(url, started))


async def _take_back_activity(url: str, started: datetime) -> None:
    hour = started.replace(minute=0, second=0, microsecond=0)
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        cursor = await conn.execute("DELETE FROM activity WHERE ts >= %s RETURNING record", (hour,))
        earlier = [r for r in decode_batch(b"[" + b",".join(row[0] for row in await cursor.fetchall()) + b"]")
                   if r.timestamp < started]  # fmt: skip
        await conn.execute("DELETE FROM activity_hourly WHERE hour >= %s", (hour,))
        await store_records(conn, earlier)  # the records of that hour from before the run, and their rollups
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:  # VACUUM runs outside one
        await conn.execute("VACUUM (ANALYZE) activity, activity_hourly")  # the untouched days' pages are skipped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the seeded log")
    parser.add_argument("--activity", type=int, default=1_000_000, help="activity records")
    parser.add_argument("--database", default=None, help="the seeded database (default: named after the sizes)")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".mechamental/bench"), help="embedded servers' data (kept)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    name = args.database or seeded_name(args.events, args.activity)
    with harness.servers(args.data_dir) as (server_url, nats_url):
        ensure_seeded(server_url, nats_url, args.data_dir, name, args.events, args.activity)
    print(f"database: {name}")


if __name__ == "__main__":
    main()
