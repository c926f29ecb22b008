"""Schemathesis against the app's own OpenAPI schema, authenticated as root, over every operation:
no 5xx, every answer's status code documented and its body conforming to the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT_TOKEN

pytestmark = pytest.mark.fuzz


def test_fuzzing_the_schema_finds_no_server_error_and_no_undocumented_answer(system, tmp_path):
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    done = subprocess.run(
        [
            cli,
            "run",
            f"{system.url}/schema/openapi.json",
            "-H",
            f"Authorization: Bearer {ROOT_TOKEN}",
            "-c",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
            "-n",
            "5",
            "--phases",
            "examples,fuzzing",
            "--seed",
            "20261123",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-6000:]
