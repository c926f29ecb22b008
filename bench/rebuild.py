"""Rebuild speed: every view rebuilt from the event store by `mechamental projections rebuild` (run as its own
process, with its progress bar), in events per second of the log, against the raw read rate of the store's
notification log (EventStore.read in batches, decoding included) measured in the same run.

    python -m bench.rebuild [--events 1000000] [--activity 1000000] [--keep]

Seeds a database first (see bench/seed.py) unless a seeded one of these sizes exists; one seeded by this run
is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import threading
import time
from pathlib import Path

from bench import harness, seed
from domain.aggregates import AGGREGATES
from eventstore import Codec
from eventstore.postgres import PostgresEventStore, datastore_from_url

BATCH = 5000


class PostgresCpu(threading.Thread):
    """CPU seconds of the server processes serving one database, when PostgreSQL runs on this machine. The
    machine may be shared (two cores, other benchmarks): CPU per event says what wall time cannot."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database.encode()
        self.seconds: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            self._sample()

    def _sample(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                if command.startswith(b"postgres:") and self.database in command:
                    self.seconds[pid] = harness.process_cpu(pid)
            except OSError:
                continue  # gone meanwhile

    def total(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seconds.values())


def raw_read_rate(url: str) -> tuple[int, float, float]:
    """(events, events per second, Python CPU seconds) reading the whole log as the rebuild reads it."""
    store = PostgresEventStore(datastore_from_url(url, pool_size=1, max_overflow=0), Codec(AGGREGATES))
    try:
        started, cpu, position, count = time.perf_counter(), time.process_time(), 0, 0
        while batch := store.read(position, BATCH):
            position, count = batch[-1].position, count + len(batch)
        return count, count / (time.perf_counter() - started), time.process_time() - cpu
    finally:
        store.close()


def rebuild_every_view(env: dict[str, str], database: str) -> tuple[float, float, float]:
    """Seconds `mechamental projections rebuild` takes for all views, process start to exit; CPU seconds of that
    process and of PostgreSQL's processes serving it."""
    postgres = PostgresCpu(database)
    postgres.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*harness.CLI, "projections", "rebuild"], env=env, check=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, postgres.total()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    seed.add_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep a database this run seeds")
    args = parser.parse_args()
    with seed.seeded_database(args) as (url, nats_url, name):
        env = harness.role_environment(url, nats_url, args.data_dir)
        events, read_rate, read_cpu = raw_read_rate(url)
        seconds, cpu, postgres_cpu = rebuild_every_view(env, name)
        rate = events / seconds
        print(f"\nlog: {events:,} events, database {name}")
        print(f"raw read of the log (EventStore.read, {BATCH} a batch)   {read_rate:>9,.0f} events/s")
        print(f"rebuild every view (projections rebuild)          {rate:>9,.0f} events/s  ({seconds:.1f} s)")
        print(
            f"CPU per event: raw read {read_cpu / events * 1e6:.1f} us (Python); rebuild "
            f"{cpu / events * 1e6:.1f} us (its process) + {postgres_cpu / events * 1e6:.1f} us (PostgreSQL); "
            f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(f"\nratio rebuild / raw read = {rate / read_rate:.2f}   goal: rebuild at least 20,000 events/s")


if __name__ == "__main__":
    main()
