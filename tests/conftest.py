"""Real PostgreSQL and NATS for every test that touches storage.

`MECHAMENTAL_TEST_DATABASE_URL` / `MECHAMENTAL_TEST_NATS_URL` point at servers to use; otherwise
the fixtures start embedded ones (pip-installed binaries) under a temporary directory. Each test
session gets its own database, JetStream stream and subject prefix, so runs never see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mechamental.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from mechamental.settings import Settings

ROOT_TOKEN = "test-root-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory) -> tuple[str, str]:
    started = []
    database_url = os.environ.get("MECHAMENTAL_TEST_DATABASE_URL")
    nats_url = os.environ.get("MECHAMENTAL_TEST_NATS_URL")
    data_dir = tmp_path_factory.mktemp("servers")
    if not database_url:
        postgres = EmbeddedPostgres(data_dir, durable=False)
        postgres.start()
        started.append(postgres)
        database_url = postgres.url
    if not nats_url:
        broker = EmbeddedNats(data_dir, durable=False)
        broker.start()
        started.append(broker)
        nats_url = broker.url
    yield database_url, nats_url
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def settings(server_urls, tmp_path_factory) -> Settings:
    """A fresh database and stream for this session, migrated."""
    admin_url, nats_url = server_urls
    with scratch_database(admin_url, "mm_test") as database_url:
        yield migrated_settings(database_url, nats_url, tmp_path_factory.mktemp("data"))


def migrated_settings(database_url: str, nats_url: str, data_dir) -> Settings:
    from mechamental.bootstrap import migrate

    tag = secrets.token_hex(4)
    settings = Settings(
        database_url=database_url,
        nats_url=nats_url,
        root_token=ROOT_TOKEN,
        data_dir=data_dir,
        stream=f"MMTEST_{tag}",
        subject_prefix=f"mmt{tag}",
        min_position_timeout=3.0,
        executor_timeout=2.0,
        outbound_allow=["127.0.0.0/8"],  # the tests' endpoints listen on this machine
    )
    migrate(settings)
    return settings


def open_store(database_url: str, *, max_overflow: int = 1):
    """The PostgreSQL event store a test appends to or reads directly, beside the system under test."""
    from domain.aggregates import AGGREGATES
    from eventstore import Codec
    from eventstore.postgres import PostgresEventStore, datastore_from_url

    datastore = datastore_from_url(database_url, pool_size=1, max_overflow=max_overflow)
    return PostgresEventStore(datastore, Codec(AGGREGATES))


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str):
    """A new, empty database on the test server; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def process_environment(server_urls: tuple[str, str], data_dir, name: str):
    """Environment for roles run as processes: a database, stream and subjects of their own."""
    admin_url, nats_url = server_urls
    with scratch_database(admin_url, f"mm_{name}") as database_url:
        tag = secrets.token_hex(4)
        yield {
            **os.environ,
            "MECHAMENTAL_DATABASE_URL": database_url,
            "MECHAMENTAL_NATS_URL": nats_url,
            "MECHAMENTAL_ROOT_TOKEN": f"{name}-{secrets.token_hex(8)}",
            "MECHAMENTAL_STREAM": f"MM{name.upper()}_{tag}",
            "MECHAMENTAL_SUBJECT_PREFIX": f"mm{name}{tag}",
            "MECHAMENTAL_DATA_DIR": str(data_dir),
            "MECHAMENTAL_PORT": str(free_port()),
            "MECHAMENTAL_LOG_LEVEL": "WARNING",
        }


class RunningRoles:
    """Runs roles in a background thread's event loop, as `mechamental dev` runs them in one process."""

    def __init__(self, settings: Settings, roles: set[str]) -> None:
        from msgspec.structs import replace

        self.settings = replace(settings, port=free_port())
        self.roles = roles
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def _main(self) -> None:
        from mechamental.bootstrap import run_roles

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run_roles(self.settings, self.roles, self._stop, on_ready=self.ready.set)

        try:
            asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 - surfaced by start()
            self.error = error
            self.ready.set()

    def start(self) -> RunningRoles:
        self._thread.start()
        self.ready.wait(60)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="session")
def system(settings) -> RunningRoles:
    roles = RunningRoles(settings, {"api", "relay", "projector", "scheduler", "executor"}).start()
    yield roles
    roles.stop()


@pytest.fixture()
def api(system) -> httpx.Client:
    with httpx.Client(base_url=system.url, headers={"Authorization": f"Bearer {ROOT_TOKEN}"}, timeout=30) as client:
        yield client


@pytest.fixture()
def org() -> str:
    return "org-" + secrets.token_hex(6)


def position_of(response: httpx.Response) -> str:
    return response.headers["X-Event-Position"]


def issue_token(api: httpx.Client, org: str, role: str, **extra) -> str:
    response = api.post(f"/v1/orgs/{org}/tokens", json={"name": f"{role} token", "role": role, **extra})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def as_token(system: RunningRoles, token: str) -> httpx.Client:
    return httpx.Client(base_url=system.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


ERROR_KEYS = {"error", "message", "details", "timestamp", "status_code"}


def assert_envelope(response: httpx.Response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == error and body["status_code"] == status
    return body


def assert_422(response: httpx.Response, loc: list) -> dict:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail"}, body
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type", "input", "ctx"}, item
    assert loc in [item["loc"] for item in body["detail"]], body
    return body
