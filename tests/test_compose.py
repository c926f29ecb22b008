"""compose.yaml cannot be started here (no Docker engine), so its wiring is checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mechamental.cli import build_parser
from mechamental.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
ROLES = {"migrate", "api", "relay", "projector", "scheduler", "executor"}


def commands_of_cli() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def test_every_role_runs_from_the_projects_image():
    services = COMPOSE["services"]
    assert ROLES | {"postgres", "nats"} <= set(services)
    for role in ROLES:
        service = services[role]
        assert service["build"] == "." and service["command"] == [role]
        assert role in commands_of_cli()
    assert (ROOT / "Dockerfile").exists()
    assert 'ENTRYPOINT ["mechamental"]' in (ROOT / "Dockerfile").read_text()


def test_the_image_holds_every_package_the_project_installs():
    import tomllib

    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = [pattern.rstrip("*") for pattern in included]
    missing = [p for p in packages if f"COPY {p} {p}" not in dockerfile]
    assert not missing, f"the Dockerfile copies no {missing}: the image would fail to import them"
    assert all((ROOT / p / "__init__.py").exists() for p in packages)


def test_every_variable_is_one_the_code_reads_and_points_at_the_right_service():
    known = set(Settings.env_names().values())
    services = COMPOSE["services"]
    for role in ROLES:
        env = services[role]["environment"]
        assert set(env) <= known, set(env) - known
        assert "@postgres:5432/" in env["MECHAMENTAL_DATABASE_URL"]
        assert env["MECHAMENTAL_NATS_URL"] == "nats://nats:4222"
    postgres_env = services["postgres"]["environment"]
    url = services["api"]["environment"]["MECHAMENTAL_DATABASE_URL"]
    user, password, database = re.fullmatch(r"postgresql://(\w+):(\w+)@postgres:5432/(\w+)", url).groups()
    assert (user, password, database) == (
        postgres_env["POSTGRES_USER"],
        postgres_env["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"],
    )


def test_api_port_matches_its_settings_and_published_port():
    api = COMPOSE["services"]["api"]
    port = api["environment"]["MECHAMENTAL_PORT"]
    assert f"{port}:{port}" in api["ports"] and api["environment"]["MECHAMENTAL_HOST"] == "0.0.0.0"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_nats_runs_jetstream_on_file_storage_with_fsync_always():
    nats = COMPOSE["services"]["nats"]
    conf = COMPOSE["configs"]["nats-conf"]["content"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "jetstream" in conf and "sync_interval: always" in conf
    store_dir = re.search(r"store_dir: (\S+)", conf).group(1)
    assert any(volume.endswith(":" + store_dir) for volume in nats["volumes"])
    assert "4222:4222" in nats["ports"]


def test_roles_wait_for_migrate():
    for role in ROLES - {"migrate"}:
        assert COMPOSE["services"][role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
