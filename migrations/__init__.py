"""The database's schema as numbered steps: `NNNN_<what>.sql` in this package, applied in order by
`mechamental migrate`, each once, in its own transaction, recorded in `schema_migrations` with its checksum.

Migrations of one database take turns (an advisory lock), so two `migrate` at once are safe. A step already
applied whose file has changed since (its checksum) stops `migrate` before it applies anything: a change to
the schema is a new step, never an edit of an old one. Steps 0001-0014 are idempotent (IF NOT EXISTS, OR
REPLACE, guarded blocks) so that they adopt a database made before this table existed; later ones need not be.

Each step's first line names what owns the tables it makes (`-- owner: workspaces`). A read model's DDL is
the steps of its owner in order (`ddl`): the live tables are made by running them here, and a rebuild makes
its fresh copies by running the same text in a schema of its own (`projections.rebuild`), so each table is
written once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

LOCK = "mechamental.migrate"
TABLE_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,           -- sha256 of the step's file
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_OWNER = re.compile(r"^-- owner: (\w+)$")


class ChangedStep(Exception):
    """An applied step's file is not what was applied; `migrate` applies nothing."""


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    owner: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@cache
def steps() -> tuple[Step, ...]:
    found = []
    for entry in resources.files(__name__).iterdir():
        if match := _FILE.match(entry.name):
            sql = entry.read_text(encoding="utf-8")
            owner = _OWNER.match(sql.partition("\n")[0])
            if owner is None:
                raise ValueError(f"{entry.name} does not begin with `-- owner: <name>`")
            found.append(Step(int(match[1]), match[2], owner[1], sql))
    found.sort(key=lambda step: step.version)
    versions = [step.version for step in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two steps share a version: {versions}")
    return tuple(found)


def ddl(owner: str) -> str:
    """Every step of `owner`, in order: the SQL that makes its tables as they are now, in the first schema of
    the search path."""
    return "\n".join(step.sql for step in steps() if step.owner == owner)


def migrate(database_url: str, *, upto: int | None = None) -> list[Step]:
    """Applies the steps not yet applied (up to version `upto`, when given); returns those it applied."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK,))  # held until the connection closes
        conn.execute(TABLE_DDL)
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        known = {step.version: step for step in steps()}
        for version, checksum in sorted(applied.items()):
            if version not in known:
                if version < max(known):
                    raise ChangedStep(f"applied step {version} is not among this code's steps")
                continue  # applied by newer code
            if known[version].checksum != checksum:
                step = known[version]
                raise ChangedStep(
                    f"step {version:04d}_{step.name} changed after it was applied; add a new step instead"
                )
        done = []
        for step in steps():
            if step.version in applied or (upto is not None and step.version > upto):
                continue
            with conn.transaction():
                conn.execute(step.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (step.version, step.name, step.checksum),
                )
            log.info("applied migration %04d_%s", step.version, step.name)
            done.append(step)
        return done
