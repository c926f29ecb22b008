"""The `mechamental` command."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

from mechamental.bootstrap import ROLES
from mechamental.embedded import PR_SET_PDEATHSIG
from mechamental.settings import ConfigurationError, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechamental", description="MechaMental control plane")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="run every role in one process, on embedded PostgreSQL and NATS "
        "unless MECHAMENTAL_DATABASE_URL / MECHAMENTAL_NATS_URL are set",
    )
    dev.add_argument(
        "--data-dir", type=Path, default=None, help="where embedded servers keep data (default ./.mechamental)"
    )
    dev.add_argument("--host", default=None, help="API address (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=None, help="API port (default 8000)")

    # Operator commands reach a running `dev` through its data directory (see database_of_running_dev).
    operator = argparse.ArgumentParser(add_help=False)
    operator.add_argument(
        "--data-dir", type=Path, default=None, help="reach the `mechamental dev` running on this data directory"
    )

    for role in ROLES:
        sub = commands.add_parser(role, help=f"run the {role} role")
        if role == "api":
            sub.add_argument("--host", default=None)
            sub.add_argument("--port", type=int, default=None)
    commands.add_parser(
        "migrate", parents=[operator], help="apply the migration steps not yet applied and create the JetStream stream"
    )

    projections = commands.add_parser("projections", help="the views: how far behind, and rebuilding them")
    projection_commands = projections.add_subparsers(dest="projections_command", required=True)
    projection_commands.add_parser(
        "status", parents=[operator], help="position, head and lag of every consumer of the log"
    )
    rebuild = projection_commands.add_parser(
        "rebuild",
        parents=[operator],
        help="replay the event store into fresh tables and swap them in while the live view keeps serving",
    )
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="views to rebuild (default: all)")

    events = commands.add_parser("events", help="the raw event stream, for auditors")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    export = event_commands.add_parser(
        "export", parents=[operator], help="write an org's events as NDJSON to stdout (streaming)"
    )
    export.add_argument("--org", required=True)
    export.add_argument("--after", type=int, default=0, help="only events after this log position")
    verify = event_commands.add_parser(
        "verify", parents=[operator], help="recompute the hash chain; name the first broken event"
    )
    verify.add_argument("--org", default=None, help="check only this org's events")

    tokens = commands.add_parser("tokens", help="manage API tokens")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = token_commands.add_parser(
        "create", parents=[operator], help="issue an org token and print it (shown once)"
    )
    create.add_argument("--org", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--role", default="owner")
    create.add_argument("--user-id", default=None)
    return parser


def collect_garbage_less_often() -> None:
    """Every role makes and drops containers by the million: events decoded from the log, rows, requests.
    CPython's default collects the young generation every 700 of them and escalates to passes over the whole
    heap, which on the log's decoding take most of its time
    (BENCHMARKS.md, "Appendix: why the code is the way it is").
    Cycles are still collected, every 50,000 allocations; memory stays bounded."""
    gc.set_threshold(50_000, 20, 100)


def main(argv: list[str] | None = None) -> int:
    collect_garbage_less_often()
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k, None) for k in ("data_dir", "host", "port")}
    try:
        settings = Settings.from_env(**overrides)
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # it logs every reconnect attempt as an error
    if args.command == "dev":
        return dev(settings)
    if args.command in OPERATOR_COMMANDS:
        try:
            settings = database_of_running_dev(settings, data_dir_given=args.data_dir is not None)
        except ConfigurationError as error:
            print(error, file=sys.stderr)
            return 2
        return explained_database_errors(settings, lambda: OPERATOR_COMMANDS[args.command](settings, args))
    if args.command == "api" and settings.api_workers > 1:
        return explained_database_errors(settings, lambda: run_api_workers(settings))
    return explained_database_errors(settings, lambda: run(settings, {args.command}))


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    from mechamental.bootstrap import migrate

    migrate(settings)
    print("migrated", file=sys.stderr)
    return 0


OPERATOR_COMMANDS = {
    "migrate": migrate_command,
    "tokens": lambda settings, args: create_token(settings, args),  # defined further down
    "projections": lambda settings, args: (
        projection_status(settings) if args.projections_command == "status" else rebuild(settings, args)
    ),
    "events": lambda settings, args: (
        export_events(settings, args) if args.events_command == "export" else verify_events(settings, args)
    ),
}


def database_of_running_dev(settings: Settings, *, data_dir_given: bool) -> Settings:
    """An operator command finds the embedded database of a `mechamental dev` running on its data directory
    from what `dev` records there; MECHAMENTAL_DATABASE_URL, when set, says where to go instead."""
    from msgspec.structs import replace

    if os.environ.get("MECHAMENTAL_DATABASE_URL"):
        return settings
    running = running_dev(settings.data_dir)
    if running is None:
        if data_dir_given:  # asked for a dev: not answered from whatever the default database holds
            raise ConfigurationError(
                f"no mechamental dev is running on {settings.data_dir}: start one, or set MECHAMENTAL_DATABASE_URL"
            )
        return settings
    pid, database_url = running
    if database_url is None:
        raise ConfigurationError(
            f"mechamental dev (pid {pid}) on {settings.data_dir} runs no embedded database (or is still starting "
            "it): set MECHAMENTAL_DATABASE_URL to the database it uses"
        )
    return replace(settings, database_url=database_url)


def explained_database_errors(settings: Settings, command) -> int:
    """Runs an operator command or a role; a database it cannot reach, or one never migrated, is told in one line
    (exit status 2) rather than a traceback, which is logged at DEBUG. The password in the database URL is not
    shown. A running role rides out PostgreSQL restarts itself; this ends one that cannot start, or cannot go on,
    for its supervisor to restart."""
    import psycopg

    try:
        return command()
    except Exception as error:  # noqa: BLE001 - psycopg's own, or the eventsourcing library's raised from it
        cause = next((e for e in _causes(error) if isinstance(e, psycopg.Error)), None)
        if cause is None:
            raise
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        if isinstance(cause, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction):
            message = (
                f"{_where(settings.database_url)} holds no MechaMental schema ({reason}): run `mechamental migrate`, "
                "or set MECHAMENTAL_DATABASE_URL to the system's database"
            )
        elif isinstance(cause, psycopg.OperationalError):
            message = f"cannot use PostgreSQL, {_where(settings.database_url)}: {reason}"
        else:
            raise
        logging.getLogger(__name__).debug("%s", message, exc_info=True)
        print(message, file=sys.stderr)
        return 2


def _causes(error: BaseException):
    """The error and what it was raised from (`raise ... from`): not what it happened to be raised while handling,
    which may be a database error already dealt with."""
    while error is not None:
        yield error
        error = error.__cause__


def _where(database_url: str) -> str:
    """The database a URL names, without its user or password (Settings has refused a URL that does not parse)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(database_url)
    return f"database {params.get('dbname', '?')} on {params.get('host', 'localhost')}:{params.get('port', 5432)}"


def run(settings: Settings, roles: set[str], on_ready=None, sockets: list | None = None) -> int:
    from mechamental.bootstrap import run_roles

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_roles(settings, roles, stop, on_ready=on_ready, sockets=sockets)

    asyncio.run(main_loop())
    return 0


def _api_worker(settings: Settings, listener: socket.socket | None) -> None:
    # Started by `spawn`: a fresh interpreter, so logging and the collector are set up again here.
    collect_garbage_less_often()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    if sys.platform.startswith("linux"):  # a kill -9 of the supervisor takes its workers with it
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # Its own socket is bound now but listens only when the server starts serving (asyncio's Server calls
    # listen): the kernel gives a listening socket its share of new connections, which would wait unaccepted
    # through this worker's start, and be reset if it failed.
    sockets = [listener or _api_socket(settings, reuse_port=True, listen=False)]
    sys.exit(explained_database_errors(settings, lambda: run(settings, {"api"}, sockets=sockets)))


# On Linux each worker listens on a socket of its own (SO_REUSEPORT) and the kernel hashes new connections
# over them. On one shared socket, a worker woken for a burst of connections accepts all that are waiting, so
# a burst's clients can all land on one worker while the other idles
# (BENCHMARKS.md, "Appendix: why the code is the way it is").
BALANCED_BY_KERNEL = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _api_socket(settings: Settings, *, reuse_port: bool, listen: bool) -> socket.socket:
    # IPPROTO_TCP said outright: asyncio turns Nagle's algorithm off only on sockets whose protocol
    # says TCP, and with it on every response waits ~40 ms for a delayed ACK.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    if listen:
        sock.listen(2048)
    return sock


def run_api_workers(settings: Settings) -> int:
    """`api_workers` API processes serving one port. One Python process serves a core at most (the GIL); the
    kernel spreads connections over the workers. A worker that dies is replaced."""
    import multiprocessing

    # Bound here either way, so a port in use fails now, in the supervisor. With the kernel balancing, this
    # socket only holds the port (a bound socket that does not listen is given no connections) and each
    # worker listens on its own; otherwise the workers share this one.
    listener = _api_socket(settings, reuse_port=BALANCED_BY_KERNEL, listen=not BALANCED_BY_KERNEL)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers: list = []
    started: dict = {}  # worker -> when it started
    restart_at = 0.0  # workers that die at once (no database yet, say) are restarted every few seconds, not in a loop
    try:
        while not stopping:
            died = [w for w in workers if not w.is_alive()]
            workers = [w for w in workers if w.is_alive()]
            if any([started.pop(w) > time.monotonic() - 10 for w in died]):  # every one popped
                restart_at = time.monotonic() + 5
            for _ in range(settings.api_workers - len(workers) if time.monotonic() >= restart_at else 0):
                shared = None if BALANCED_BY_KERNEL else listener
                worker = context.Process(target=_api_worker, args=(settings, shared), name="mechamental-api")
                worker.start()
                started[worker] = time.monotonic()
                workers.append(worker)
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(15)
        listener.close()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


# In the data directory: the pid of the `dev` that holds it and, once it is up, its embedded database's URL
# (never the root token). Held by an flock, which the kernel drops when the holder ends, even by kill -9:
# a stale file names no holder.
DEV_LOCK = "dev.lock"


class DataDirectoryInUse(Exception):
    pass


def hold_data_directory(data_dir: Path) -> int:
    """The lock file's descriptor, open (and the directory ours) until it is closed; this pid written in it."""
    fd = os.open(data_dir / DEV_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    for _ in range(10):  # an operator command looking (a shared lock for an instant) holds nothing
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        pid, _ = _dev_record(fd)
        os.close(fd)
        raise DataDirectoryInUse(
            f"data directory {data_dir.resolve()} is in use by mechamental dev (pid {pid or 'unknown'})"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def running_dev(data_dir: Path) -> tuple[int | None, str | None] | None:
    """(pid, embedded database URL or None) of the `mechamental dev` holding `data_dir`; None when none does."""
    try:
        fd = os.open(data_dir / DEV_LOCK, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _dev_record(fd)
    else:
        return None  # we got the lock: nobody holds the directory (closing the file lets go of it)
    finally:
        os.close(fd)


def _dev_record(fd: int) -> tuple[int | None, str | None]:
    fields = os.pread(fd, 4096, 0).decode(errors="replace").split()
    pid = int(fields[0]) if fields and fields[0].isdigit() else None
    return pid, fields[1] if len(fields) > 1 else None


def dev(settings: Settings) -> int:
    from msgspec.structs import replace

    from mechamental.bootstrap import migrate
    from mechamental.embedded import EmbeddedNats, EmbeddedPostgres

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = hold_data_directory(settings.data_dir)
    except DataDirectoryInUse as error:
        print(error, file=sys.stderr)
        return 2
    servers = []
    postgres = None  # the embedded server, when it is ours
    # Signals during start-up still stop the servers we already started (see the finally below).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not os.environ.get("MECHAMENTAL_DATABASE_URL"):
            postgres = EmbeddedPostgres(settings.data_dir)
            postgres.start()
            servers.append(postgres)
            settings = replace(settings, database_url=postgres.url)
            os.write(lock, f"{postgres.url}\n".encode())  # for the operator commands (database_of_running_dev)
        if not os.environ.get("MECHAMENTAL_NATS_URL"):
            broker = EmbeddedNats(settings.data_dir)
            broker.start()
            servers.append(broker)
            settings = replace(settings, nats_url=broker.url)
        token_given = bool(settings.root_token)  # then it is the operator's to keep, not ours to show
        if not token_given:
            settings = replace(settings, root_token="mmroot_" + secrets.token_urlsafe(24))
        migrate(settings)

        def announce() -> None:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            address = f"http://{host}:{settings.port}"
            lines = [
                f"MechaMental API on {address}  (OpenAPI: {address}/schema, Swagger UI: {address}/schema/swagger)",
                "Root token: from MECHAMENTAL_ROOT_TOKEN" if token_given else f"Root token: {settings.root_token}",
            ]
            if postgres is not None:
                if postgres.moved_from is not None:
                    lines.append(
                        f"Database port {postgres.moved_from} is taken: the embedded PostgreSQL listens on "
                        f"{postgres.port} now, and MECHAMENTAL_DATABASE_URL has changed"
                    )
                lines += [
                    f"Database (embedded): MECHAMENTAL_DATABASE_URL={settings.database_url}",
                    f"Operator commands find it with --data-dir: mechamental projections status --data-dir "
                    f"{settings.data_dir.resolve()}",
                ]
            if settings.outbound_allow:
                allowed = ",".join(settings.outbound_allow)
                lines.append(f"Runs may call the networks in MECHAMENTAL_OUTBOUND_ALLOW: {allowed}")
            else:
                lines.append(
                    "Runs may call public addresses only; to let them call endpoints on this machine, "
                    "set MECHAMENTAL_OUTBOUND_ALLOW=127.0.0.0/8"
                )
            lines.append(f"Data: {settings.data_dir.resolve()}   Ctrl-C stops everything.")
            print("\n".join(lines), flush=True)

        run(settings, set(ROLES), on_ready=announce)
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(servers):
            server.stop()
        os.close(lock)  # only now: the next dev on this directory finds its servers gone
    return 0


def create_token(settings: Settings, args: argparse.Namespace) -> int:
    from commands.tokens import issue_token
    from commands.unit_of_work import CommandRunner, Context
    from domain.aggregates import AGGREGATES
    from domain.errors import ValidationFailed
    from domain.events import ORG_ID, Actor, new_trace_id
    from eventstore import Codec
    from eventstore.postgres import PostgresEventStore, datastore_from_url

    if not ORG_ID.fullmatch(args.org):
        print(f"invalid org id {args.org!r}", file=sys.stderr)
        return 2
    datastore = datastore_from_url(settings.database_url, pool_size=1, max_overflow=0)
    store = PostgresEventStore(datastore, Codec(AGGREGATES))
    try:
        ctx = Context(
            org_id=args.org, actor=Actor("operator", os.environ.get("USER", "operator")), trace_id=new_trace_id()
        )
        _, token = issue_token(CommandRunner(store), ctx, name=args.name, role=args.role, user_id=args.user_id)
    except ValidationFailed as error:
        print(f"invalid token: {error}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(token)
    return 0


def projection_status(settings: Settings) -> int:
    import psycopg

    from mechamental.bootstrap import consumer_names
    from pipeline.positions import status

    async def read():
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            return await status(conn, consumer_names())

    rows = asyncio.run(read())
    print(f"{'consumer':<20} {'position':>10} {'head':>10} {'lag':>8} {'lag s':>9}")
    for name, position, head, lag, seconds in rows:
        print(f"{name:<20} {position:>10} {head:>10} {lag:>8} {seconds:>9.1f}")
    return 0


def rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from domain.aggregates import AGGREGATES
    from eventstore import Codec
    from eventstore.postgres import PostgresEventStore, datastore_from_url
    from mechamental.bootstrap import read_models
    from projections.rebuild import RebuildRunning, progress_bar
    from projections.rebuild import rebuild as replay

    models = {model.name: model for model in read_models()}
    unknown = set(args.names) - set(models)
    if unknown:
        print(f"unknown view(s): {', '.join(sorted(unknown))}; views: {', '.join(models)}", file=sys.stderr)
        return 2
    datastore = datastore_from_url(settings.database_url, pool_size=1, max_overflow=1)
    store = PostgresEventStore(datastore, Codec(AGGREGATES))
    try:
        names = args.names or list(models)  # rebuilt together: one pass over the log for all of them
        label = names[0] if len(names) == 1 else f"{len(names)} views"
        position = asyncio.run(
            replay(settings.database_url, store, [models[n] for n in names], progress=progress_bar(label, sys.stderr))
        )
        print(f"\n{', '.join(names)}: rebuilt to position {position} and swapped in", file=sys.stderr)
    except RebuildRunning as error:
        print(f"\n{error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        store.close()
    return 0


def export_events(settings: Settings, args: argparse.Namespace) -> int:
    import msgspec
    import psycopg

    from domain.aggregates import AGGREGATES
    from eventstore import Codec
    from projections.audit import export

    encoder = msgspec.json.Encoder()
    out = sys.stdout.buffer
    with psycopg.connect(settings.database_url) as conn:
        for event in export(conn, Codec(AGGREGATES), args.org, args.after):
            out.write(encoder.encode(event) + b"\n")
    out.flush()
    return 0


def verify_events(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from projections.audit import verify

    with psycopg.connect(settings.database_url) as conn:
        checked, broken = verify(conn, args.org)
    if broken is None:
        print(f"ok: {checked} events, hash chain intact")
        return 0
    print(f"BROKEN at position {broken.position}: event {broken.problem} ({checked} events before it were intact)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
