"""Rebuild speed: every view rebuilt from the event store by `mechamental projections rebuild` (run as its own
process, with its progress bar), in events per second of the log, against the raw read rate of the store's
notification log (EventStore.read in batches, decoding included) measured in the same run.

    python -m bench.rebuild [--events 1000000] [--activity 1000000] [--keep]

Seeds a database first (see bench/seed.py) unless a seeded one of these sizes exists; one seeded by this run
is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from bench import harness, seed
from commands.store import EventStore, datastore_from_url

BATCH = 5000


def raw_read_rate(url: str) -> tuple[int, float]:
    """(events, events per second) reading the whole log as the rebuild reads it."""
    store = EventStore(datastore_from_url(url, pool_size=1, max_overflow=0))
    try:
        started, position, count = time.perf_counter(), 0, 0
        while batch := store.read(position, BATCH):
            position, count = batch[-1].position, count + len(batch)
        return count, count / (time.perf_counter() - started)
    finally:
        store.close()


def rebuild_every_view(env: dict[str, str]) -> float:
    """Seconds `mechamental projections rebuild` takes for all views, process start to exit."""
    started = time.perf_counter()
    subprocess.run([*harness.CLI, "projections", "rebuild"], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    seed.add_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep a database this run seeds")
    args = parser.parse_args()
    name = args.database or seed.seeded_name(args.events, args.activity)
    with harness.servers(args.data_dir) as (server_url, nats_url):
        url, made = seed.ensure_seeded(server_url, nats_url, args.data_dir, name, args.events, args.activity)
        try:
            env = harness.role_environment(url, nats_url, args.data_dir)
            events, read_rate = raw_read_rate(url)
            seconds = rebuild_every_view(env)
            rate = events / seconds
            print(f"\nlog: {events:,} events, database {name}")
            print(f"raw read of the log (EventStore.read, {BATCH} a batch)   {read_rate:>9,.0f} events/s")
            print(f"rebuild every view (projections rebuild)          {rate:>9,.0f} events/s  ({seconds:.1f} s)")
            print(f"\nratio rebuild / raw read = {rate / read_rate:.2f}   goal: rebuild at least 20,000 events/s")
        finally:
            if made and not args.keep:
                harness.drop_database(server_url, name)


if __name__ == "__main__":
    main()
