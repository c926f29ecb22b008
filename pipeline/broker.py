"""How events travel through JetStream: the connection, the stream, subjects, and message headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats.js.api as js_api
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from domain.events import Recorded
from domain.secrets import masked_url
from eventstore import Codec

log = logging.getLogger(__name__)

HEADER_POSITION = "Mm-Position"
HEADER_PREVIOUS = "Mm-Previous"
HEADER_STREAM_ID = "Mm-Stream-Id"
HEADER_VERSION = "Mm-Version"
HEADER_TYPE = "Mm-Type"
HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_IN_STORE = "Mm-In-Store"  # the payload was too large for NATS: read the event from the store

# NATS refuses messages over its max_payload (1 MiB by default); larger events are sent without data.
MAX_INLINE_BYTES = 256 * 1024


def events_subject(prefix: str, org_id: str = "*", aggregate: str = "*", event_type: str = "*") -> str:
    return f"{prefix}.events.{org_id}.{aggregate}.{event_type}"


def all_events(prefix: str) -> str:
    return f"{prefix}.events.>"


async def ensure_stream(js: JetStreamContext, name: str, prefix: str) -> None:
    """Creates the events stream (file storage), or brings its subjects in line."""
    config = js_api.StreamConfig(
        name=name,
        subjects=[all_events(prefix)],
        storage=js_api.StorageType.FILE,
        retention=js_api.RetentionPolicy.LIMITS,
        max_age=7 * 24 * 3600,  # PostgreSQL keeps the log forever; the stream is only the fast path
        duplicate_window=120,
    )
    try:
        await js.stream_info(name)
    except Exception:  # noqa: BLE001 - not found, or a stale view: (re)create below
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def pull_subscribe(js: JetStreamContext, subject: str, durable: str, stream: str, **config: Any):
    """A durable pull consumer acked per batch: acking a batch's last message acks all before it. With
    JetStream syncing every write to disk, an ack per message cost one disk write per event. A consumer
    left by an older version that acks one by one is replaced (positions live in PostgreSQL, so
    nothing is lost; the new consumer's redeliveries are skipped by position)."""
    try:
        existing = await js.consumer_info(stream, durable)
    except Exception:  # noqa: BLE001 - not there yet
        existing = None
    if existing is not None and existing.config.ack_policy != js_api.AckPolicy.ALL:
        await js.delete_consumer(stream, durable)
    return await js.pull_subscribe(
        subject,
        durable=durable,
        stream=stream,
        config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.ALL, **config),
    )


def to_message(
    prefix: str, store_id: str, previous: int, notification: Any, org_id: str, aggregate: str
) -> tuple[str, bytes, dict[str, str]]:
    topic = notification.topic
    headers = {
        HEADER_MSG_ID: f"{store_id}:{notification.id}",
        HEADER_POSITION: str(notification.id),
        HEADER_PREVIOUS: str(previous),
        HEADER_STREAM_ID: str(notification.originator_id),
        HEADER_VERSION: str(notification.originator_version),
        HEADER_TYPE: topic,
    }
    payload = notification.state
    if len(payload) > MAX_INLINE_BYTES:
        headers[HEADER_IN_STORE] = "1"
        payload = b""
    return events_subject(prefix, org_id, aggregate, topic), payload, headers


def from_message(codec: Codec, headers: dict[str, str], data: bytes) -> tuple[Recorded | None, int, int]:
    """The event a message carries (None when it must be read from the store), its position, and the
    position of the event before it in the log."""
    position, previous = int(headers[HEADER_POSITION]), int(headers[HEADER_PREVIOUS])
    if headers.get(HEADER_IN_STORE):
        return None, position, previous
    recorded = codec.recorded(
        position, headers[HEADER_STREAM_ID], int(headers[HEADER_VERSION]), headers[HEADER_TYPE], data
    )
    return recorded, position, previous


async def connect_nats(url: str, timeout: float = 5.0) -> NATS | None:
    """Connects within `timeout`, then reconnects forever after any loss; None when NATS is down now
    (the store then feeds the views, and the caller may try again later)."""
    client = NATS()
    try:
        # Reconnecting forever also makes the *first* connect wait forever: bound it ourselves.
        await asyncio.wait_for(
            client.connect(
                url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2, name="mechamental"
            ),
            timeout,
        )
        return client
    except Exception as error:  # noqa: BLE001
        log.warning("NATS at %s unavailable (%s); continuing without it", masked_url(url), type(error).__name__)
        with contextlib.suppress(Exception):
            await client.close()
        return None



class NatsConnection:
    """This process's NATS client once it has one: connected at `open`, else retried every second in the
    background (the event store feeds the views meanwhile)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: NATS | None = None
        self._retry: asyncio.Task | None = None

    def current(self) -> NATS | None:
        return self.client

    async def open(self) -> None:
        self.client = await connect_nats(self.url)
        if self.client is None:
            self._retry = asyncio.create_task(self._connect_later())

    async def _connect_later(self) -> None:
        while self.client is None:
            await asyncio.sleep(1.0)
            self.client = await connect_nats(self.url)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self.client is not None and not self.client.is_closed:
            with contextlib.suppress(Exception):
                await self.client.close()
