"""Configuration, read from the environment once, in one place."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict

ENV_PREFIX = "MECHAMENTAL_"


class Settings(msgspec.Struct, frozen=True):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    nats_url: str = "nats://127.0.0.1:4222"
    root_token: str | None = None
    metrics_token: str | None = None  # lets a scraper read /metrics and nothing else
    data_dir: Path = Path(".mechamental")
    host: str = "127.0.0.1"
    port: int = 8000
    # API processes sharing the port (the `api` role only); each has its own event loop and committer.
    api_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    stream: str = "MECHAMENTAL_EVENTS"
    subject_prefix: str = "mm"
    min_position_timeout: float = 5.0
    max_body_bytes: int = 1_048_576
    log_level: str = "INFO"
    access_log: bool = False  # one line per HTTP request (api.access_log), without headers or query
    executor_timeout: float = 30.0
    executor_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64  # attempts in flight per executor process
    executor_org_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 8  # of those, attempts of any one org
    activity_recording: bool = True
    rate_limit_per_second: float = 0.0  # per token; 0 turns the limit off
    rate_limit_burst: int = 50
    activity_retention_days: int = 90
    # Workspaces each API process keeps for reads (api.cache); 0 turns the cache off.
    read_cache_entries: Annotated[int, msgspec.Meta(ge=0)] = 20_000
    # Comma-separated networks (CIDR) runs may call although they are not globally routable (127.0.0.0/8 for
    # endpoints on this machine); runs may call any global address anyway. Deny wins over allow.
    outbound_allow: list[str] = msgspec.field(default_factory=list)
    outbound_deny: list[str] = msgspec.field(default_factory=list)

    @property
    def buckets_dir(self) -> Path:
        return self.data_dir / "buckets"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable."""
        return {field: ENV_PREFIX + field.upper() for field in cls.__struct_fields__}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        lists = {f.name for f in msgspec.structs.fields(cls) if "list[" in repr(f.type)}
        values: dict[str, object] = {}
        for field, name in cls.env_names().items():
            if name in environ:
                raw = environ[name]
                if field in lists:  # comma-separated; empty means none
                    values[field] = [item.strip() for item in raw.split(",") if item.strip()]
                elif raw:
                    values[field] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = msgspec.convert(values, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as error:
            field = str(error).rpartition("$.")[2].strip("`")
            name = cls.env_names().get(field, field)
            raise ConfigurationError(f"invalid configuration: {name}: {str(error).partition(' - ')[0]}") from None
        for field in ("outbound_allow", "outbound_deny"):
            for network in getattr(settings, field):
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    raise ConfigurationError(
                        f"invalid configuration: {cls.env_names()[field]}: {network!r} is not a network (CIDR)"
                    ) from None
        try:
            conninfo_to_dict(settings.database_url)
        except psycopg.ProgrammingError:  # its message quotes the URL, password and all: not passed on
            raise ConfigurationError(
                f"invalid configuration: {cls.env_names()['database_url']}: not a PostgreSQL connection URL "
                "(postgresql://user:password@host:port/dbname)"
            ) from None
        return settings


class ConfigurationError(Exception):
    pass


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, (str, Path)):
        return Path(value)
    raise NotImplementedError(type_)  # msgspec's dec_hook protocol for a type it does not convert
