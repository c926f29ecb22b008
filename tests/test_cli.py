"""Operator commands and roles pointed at the wrong database: one line that says what to do, never a traceback.
And `mechamental dev` as a new user meets it: its banner, its data directory, its access log."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mechamental.embedded import free_port
from tests.conftest import process_environment, scratch_database
from tests.support import eventually

CLI = [sys.executable, "-m", "mechamental.cli"]
OPERATOR_COMMANDS = [
    ["projections", "status"],
    ["projections", "rebuild"],
    ["events", "export", "--org", "acme"],
    ["events", "verify"],
    ["tokens", "create", "--org", "acme", "--name", "t"],
]


def run_cli(args: list[str], database_url: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MECHAMENTAL_DATABASE_URL": database_url,
        "MECHAMENTAL_PORT": str(free_port()),
        "MECHAMENTAL_API_WORKERS": "1",  # a supervisor of several restarts its workers rather than exit
    }
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def with_password(url: str, password: str, **changes) -> str:
    return make_conninfo(**{**conninfo_to_dict(url), "password": password, **changes})


@pytest.fixture(scope="module")
def unmigrated(server_urls):
    with scratch_database(server_urls[0], "mm_unmigrated") as database_url:
        yield database_url


@pytest.mark.parametrize("args", OPERATOR_COMMANDS, ids=" ".join)
def test_a_database_never_migrated_is_named_with_the_command_that_fixes_it(unmigrated, args):
    done = run_cli(args, with_password(unmigrated, "not-to-be-shown"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "not-to-be-shown" not in done.stderr
    assert conninfo_to_dict(unmigrated)["dbname"] in done.stderr
    assert "holds no MechaMental schema" in done.stderr and "mechamental migrate" in done.stderr
    assert done.stdout == ""  # not even the status table's header


@pytest.mark.parametrize("args", [["projections", "status"], ["migrate"], ["relay"], ["api"]], ids=" ".join)
def test_a_database_out_of_reach_is_named_without_its_password(server_urls, args):
    refused = with_password(server_urls[0], "not-to-be-shown", host="127.0.0.1", port="1")
    done = run_cli(args, refused)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "not-to-be-shown" not in done.stderr
    assert "cannot use PostgreSQL" in done.stderr and "127.0.0.1:1" in done.stderr


@pytest.mark.parametrize("args", [["projections", "status"], ["api"]], ids=" ".join)
def test_a_database_url_that_cannot_be_parsed_is_refused_without_quoting_it(args):
    done = run_cli(args, "postgresql://someone:not-to-be-shown@host/db?broken")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "not-to-be-shown" not in done.stderr
    assert "MECHAMENTAL_DATABASE_URL: not a PostgreSQL connection URL" in done.stderr


def dev_environment(**changes: str) -> dict[str, str]:
    """The test run's environment without its MECHAMENTAL_ settings, so `dev` starts its own servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MECHAMENTAL_")}
    return {**env, "MECHAMENTAL_LOG_LEVEL": "WARNING", **changes}


class Dev:
    """A `mechamental dev` subprocess, started and ready (its banner printed); its output in files."""

    def __init__(self, data_dir: Path, logs: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env = data_dir, env
        self.port = free_port()
        self.out, self.err = logs / f"dev-{self.port}.out", logs / f"dev-{self.port}.err"
        command = [*CLI, "dev", "--data-dir", str(data_dir), "--port", str(self.port)]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err)

        def started() -> bool:
            assert self.process.poll() is None, "dev exited"
            return "Ctrl-C stops everything" in self.banner

        try:
            eventually(started, timeout=120, interval=0.1, what="dev to print its banner")
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"dev did not start ({error}):\n{self.banner}\n{self.err.read_text()}") from None

    @property
    def banner(self) -> str:
        return self.out.read_text()

    @property
    def database_url(self) -> str:
        return re.search(r"MECHAMENTAL_DATABASE_URL=(\S+)", self.banner).group(1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


@pytest.fixture(scope="module")
def embedded_dev(tmp_path_factory):
    """One `dev` on embedded servers for the tests below (initdb is slow); a test may restart it."""
    logs = tmp_path_factory.mktemp("dev")
    token = "given-root-" + secrets.token_hex(8)
    dev = Dev(logs / "data", logs, dev_environment(MECHAMENTAL_ROOT_TOKEN=token))
    holder = {"dev": dev, "token": token}
    yield holder
    holder["dev"].stop()


def test_a_second_dev_on_a_data_directory_in_use_fails_at_once_naming_the_first(embedded_dev):
    first = embedded_dev["dev"]
    command = [*CLI, "dev", "--data-dir", str(first.data_dir), "--port", str(free_port())]
    done = subprocess.run(command, env=first.env, capture_output=True, text=True, timeout=20)  # not 60 s of silence
    assert done.returncode != 0
    assert f"data directory {first.data_dir.resolve()} is in use by mechamental dev (pid {first.process.pid})" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert first.process.poll() is None  # the first goes on


def test_operator_commands_find_a_running_dev_from_its_data_directory(embedded_dev, tmp_path):
    dev = embedded_dev["dev"]
    env = dev_environment()  # no MECHAMENTAL_DATABASE_URL to copy
    status = [*CLI, "projections", "status", "--data-dir", str(dev.data_dir)]
    done = subprocess.run(status, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "relay" in done.stdout
    create = [*CLI, "tokens", "create", "--org", "acme", "--name", "ops", "--data-dir", str(dev.data_dir)]
    created = subprocess.run(create, env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    # MECHAMENTAL_DATABASE_URL still wins over the data directory.
    elsewhere = {**env, "MECHAMENTAL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"}
    refused = subprocess.run(status, env=elsewhere, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "127.0.0.1:1" in refused.stderr
    # A data directory no dev runs on is said so, not answered from another database.
    idle = subprocess.run(status[:-1] + [str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert idle.returncode == 2 and f"no mechamental dev is running on {tmp_path}" in idle.stderr


def test_the_banner_shows_swagger_and_never_a_root_token_it_was_given(embedded_dev):
    dev = embedded_dev["dev"]
    assert f"http://127.0.0.1:{dev.port}/schema/swagger" in dev.banner
    assert "Root token: from MECHAMENTAL_ROOT_TOKEN" in dev.banner
    assert "MECHAMENTAL_OUTBOUND_ALLOW=127.0.0.0/8" in dev.banner
    assert embedded_dev["token"] not in dev.banner
    for path in dev.data_dir.iterdir():  # nor in what dev records for the operator commands
        if path.is_file():
            assert embedded_dev["token"].encode() not in path.read_bytes(), path


def test_the_database_url_survives_a_restart_of_dev_and_moves_only_when_its_port_is_taken(embedded_dev):
    first = embedded_dev["dev"]
    first.stop()
    again = embedded_dev["dev"] = Dev(first.data_dir, first.out.parent, first.env)
    assert again.database_url == first.database_url
    again.stop()
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the TIME_WAITs the last server left
    taken.bind(("127.0.0.1", int(conninfo_to_dict(first.database_url)["port"])))
    taken.listen()
    try:
        moved = embedded_dev["dev"] = Dev(first.data_dir, first.out.parent, first.env)
    finally:
        taken.close()
    assert moved.database_url != first.database_url
    assert f"port {conninfo_to_dict(first.database_url)['port']} is taken" in moved.banner


def logged(dev: Dev, org: str) -> list[str]:
    log = dev.err.read_text() + dev.out.read_text()
    return [line for line in log.splitlines() if f"/v1/orgs/{org}/" in line]


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_the_access_log_has_a_line_per_request_when_on_and_none_when_off(server_urls, tmp_path, on):
    with process_environment(server_urls, tmp_path / "buckets", "access") as env:
        env = {**env, "MECHAMENTAL_ACCESS_LOG": "true" if on else "false"}
        dev = Dev(tmp_path / "data", tmp_path, env)
        try:
            org = "org-" + secrets.token_hex(4)
            headers = {"Authorization": f"Bearer {env['MECHAMENTAL_ROOT_TOKEN']}"}
            base = f"http://127.0.0.1:{dev.port}"
            assert httpx.get(f"{base}/v1/orgs/{org}/workspaces", headers=headers).status_code == 200
            assert httpx.get(f"{base}/v1/orgs/{org}/nothing-here").status_code in (401, 404)
            if on:  # a line is written as its response goes out: wait for both
                eventually(lambda: len(logged(dev, org)) >= 2, what="two access log lines")
            else:
                time.sleep(0.5)  # a line that is never written cannot be waited for: give one the time to appear
        finally:
            dev.stop()
        log = dev.err.read_text() + dev.out.read_text()
        lines = logged(dev, org)
        if on:
            assert len(lines) == 2, log
            assert "GET" in lines[0] and f"/v1/orgs/{org}/workspaces" in lines[0] and " 200 " in lines[0]
            assert not any(env["MECHAMENTAL_ROOT_TOKEN"] in line for line in lines)
        else:
            assert lines == [], log
