"""How activity batches travel through JetStream: one stream and subject for every org's records, and batches
deflated (`Mm-Encoding: zlib`): records of one API differ in little, and a batch shrinks about ten times, so
JetStream stores and delivers that much less. A consumer older than this cannot read them, so the projector
role is upgraded before the roles that publish."""

from __future__ import annotations

import zlib

import nats.js.api as js_api

from activity.records import ActivityRecord, decode_batch, encode_batch

ENCODING = "Mm-Encoding"
MAX_BATCH_BYTES = 64 << 20  # a batch inflated past this is not ours (ours are a few MB at most)


def encoded(records: list[ActivityRecord]) -> bytes:
    return zlib.compress(encode_batch(records), 1)


def decoded(message) -> list[ActivityRecord]:
    """The records of a message: deflated (`Mm-Encoding: zlib`) or, from an older publisher, plain JSON."""
    data = message.data
    if (getattr(message, "headers", None) or {}).get(ENCODING) == "zlib":
        inflater = zlib.decompressobj()
        data = inflater.decompress(data, MAX_BATCH_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"an activity batch inflates past {MAX_BATCH_BYTES} bytes")
        if not inflater.eof:  # cut short: its end, and its checksum, never came
            raise ValueError("an activity batch is truncated")
    return decode_batch(data)


def activity_subject(prefix: str) -> str:
    # One subject for every org's records: a flush is one message whatever the orgs, and with JetStream
    # syncing every write to disk, messages (not bytes) are what it costs.
    return f"{prefix}.activity.records"


async def ensure_activity_stream(js, name: str, prefix: str) -> None:
    config = js_api.StreamConfig(
        name=name,
        subjects=[f"{prefix}.activity.>"],
        storage=js_api.StorageType.FILE,
        max_age=7 * 24 * 3600,
        duplicate_window=120,
    )
    try:
        await js.stream_info(name)
    except Exception:  # noqa: BLE001 - not there yet
        await js.add_stream(config)
        return
    await js.update_stream(config)
