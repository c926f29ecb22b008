"""Operator commands and roles pointed at the wrong database: one line that says what to do, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mechamental.embedded import free_port
from tests.conftest import scratch_database

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
