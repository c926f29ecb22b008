"""eventsourcing's recorder against our append: the same events into the same table, in one run.

Both write `stored_events` (with its hash-chain trigger) in a scratch database on the same server:

- the library: `PostgresApplicationRecorder.insert_events`, a transaction per call on its pooled connections
  (SET lock_timeout, LOCK TABLE, NOTIFY, INSERT ... unnest, pipelined);
- ours: `PostgresEventStore.append`, the `mm_append` function through the group-commit thread (the lock, the
  read checks and claims it skips when there are none, INSERT ... unnest, pg_notify), one round trip.

Two loads: one writer appending one event at a time (the cost of one append, group commit cannot help), and
`--threads` writers at once (what commands do). Rounds alternate, library first, and the ratio is of the
medians. `python -m bench.recorder [--appends 2000] [--threads 16] [--rounds 3]`
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from eventsourcing.persistence import StoredEvent

import migrations
from bench import harness
from domain.aggregates import AGGREGATES
from domain.events import SYSTEM_ACTOR, EventMeta
from domain.workspace import WorkspaceDeleted
from eventstore import Append, Codec
from eventstore.postgres import PostgresEventStore, datastore_from_url


def events(count: int) -> list[StoredEvent]:
    codec = Codec(AGGREGATES)
    meta = EventMeta("bench", SYSTEM_ACTOR, "t", datetime.now(UTC))
    topic, state = codec.encode(WorkspaceDeleted(), meta)
    prefix = "rec_" + secrets.token_hex(4)
    return [StoredEvent(f"{prefix}_{i}", 1, topic, state) for i in range(count)]


def timed(write, batch: list[StoredEvent], threads: int) -> float:
    """Appends per second, each event its own append."""
    started = time.perf_counter()
    if threads == 1:
        for stored in batch:
            write(stored)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, batch))
    return len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with harness.servers() as (server_url, _), harness.scratch_database(server_url) as url:
        migrations.migrate(url)
        store = PostgresEventStore(datastore_from_url(url, pool_size=args.threads, max_overflow=0), Codec(AGGREGATES))
        library = store.recorder.insert_events  # the recorder our store already holds, on the same pool

        def ours(stored: StoredEvent) -> None:
            store.append(Append([stored]))

        try:
            for threads in (1, args.threads):
                rates: dict[str, list[float]] = {"library": [], "ours": []}
                for _ in range(args.rounds):
                    rates["library"].append(timed(lambda e: library([e]), events(args.appends), threads))
                    rates["ours"].append(timed(ours, events(args.appends), threads))
                lib, own = statistics.median(rates["library"]), statistics.median(rates["ours"])
                print(
                    f"{threads:>2} writer(s): eventsourcing insert_events {lib:>7.0f} appends/s   "
                    f"our append {own:>7.0f} appends/s   ours/library {own / lib:.2f}",
                    flush=True,
                )
        finally:
            store.close()


if __name__ == "__main__":
    main()
