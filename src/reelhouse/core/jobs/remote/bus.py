"""The NATS side of remote workers: names, connection, streams, consumers, messages.

Layout (prefix `p`, from NATS_PREFIX):
- work stream `P_WORK` (work-queue retention, file storage), subjects `p.tasks.<capability>`:
  the kernel publishes "task N is claimable" with `Nats-Msg-Id: t<N>-f<fence>`, so kernels
  that dispatch the same queued task at once store it once. Workers pull from one durable
  consumer per capability (`work-<capability>`): explicit ack, AckWait, `max_deliver`.
  Workers ask for one message at a time without waiting (`WorkInbox`); after each dispatch the
  kernel publishes a core-NATS nudge on `p.wake.<capability>`, so an idle worker asks again at
  once instead of at its next idle look.
- events stream `P_EVENTS` (limits retention, an hour), subjects `p.events.<type>`: progress,
  logs and outcomes from workers, read by the kernels through one durable consumer
  (`kernel`), so each event is applied once however many kernels run.
- KV bucket `p_workers` (TTL NATS_WORKER_TTL): one key per worker, rewritten by its heartbeat;
  an entry that stops being rewritten expires. `p_worker_control` (no TTL): drain requests.
- request/reply `p.rpc.claim|heartbeat|lease` (queue group `p-kernel`): the database
  operations a run needs an answer to at once (claim with a fencing token, lease upkeep).

A message on the work stream is only a pointer; the claim in the database (a compare-and-set
that bumps the task's fencing token) decides who runs it, so a duplicate or late message can
never start a task twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger("reelhouse.nats")

DEFAULT_CAPABILITY = "cpu"
EVENTS_MAX_AGE = 3600.0
DUPLICATE_WINDOW = 120.0
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def token(value: str) -> str:
    """A subject token / consumer name part for a capability or worker id."""
    return _SAFE.sub("_", value)[:64] or "_"


@dataclass(frozen=True)
class Names:
    prefix: str

    @property
    def work_stream(self) -> str:
        return f"{self.prefix.upper()}_WORK"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def workers_bucket(self) -> str:
        return f"{self.prefix}_workers"

    @property
    def control_bucket(self) -> str:
        return f"{self.prefix}_worker_control"

    def task_subject(self, capability: str | None) -> str:
        return f"{self.prefix}.tasks.{token(capability or DEFAULT_CAPABILITY)}"

    def wake_subject(self, capability: str | None) -> str:
        return f"{self.prefix}.wake.{token(capability or DEFAULT_CAPABILITY)}"

    @property
    def wake_subjects(self) -> str:
        return f"{self.prefix}.wake.*"

    def next_message_subject(self, capability: str) -> str:
        """JetStream's API subject for "deliver the next message of this consumer"."""
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.work_stream}.{self.work_consumer(capability)}"

    def event_subject(self, kind: str) -> str:
        return f"{self.prefix}.events.{kind}"

    def rpc(self, name: str) -> str:
        return f"{self.prefix}.rpc.{name}"

    @property
    def kernel_group(self) -> str:
        return f"{self.prefix}-kernel"

    @staticmethod
    def work_consumer(capability: str) -> str:
        return f"work-{token(capability)}"


def task_msg_id(task_id: int, fence: int) -> str:
    return f"t{task_id}-f{fence}"


def encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def decode(data: bytes) -> Any:
    return json.loads(data.decode())


async def connect(url: str, name: str, *, stop: asyncio.Event | None = None) -> Client:
    """Connect, retrying the first connection until it works (NATS may start after us);
    afterwards the client reconnects by itself, forever."""

    async def on_error(exc: Exception) -> None:  # one line, not nats-py's traceback per retry
        log.warning("NATS %s: %s", url, exc or type(exc).__name__)

    async def on_disconnected() -> None:
        log.warning("NATS disconnected from %s; reconnecting", url)

    async def on_reconnected() -> None:
        log.info("NATS reconnected to %s", url)

    delay = 0.5
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
            )
        except Exception as exc:  # NoServersError, OSError...
            if stop is not None and stop.is_set():
                raise
            log.warning("NATS not reachable at %s (%s); retrying", url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def close_quietly(nc: Client) -> None:
    """Close without draining: a pull subscription with a fetch in flight can hold a drain."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 5)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, names: Names) -> None:
    """Create (or update) both streams; idempotent, run by kernels and workers."""
    await ensure_stream(
        js,
        StreamConfig(
            name=names.work_stream,
            subjects=[f"{names.prefix}.tasks.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        ),
    )
    await ensure_stream(
        js,
        StreamConfig(
            name=names.events_stream,
            subjects=[f"{names.prefix}.events.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=EVENTS_MAX_AGE,
            duplicate_window=DUPLICATE_WINDOW,
        ),
    )


async def workers_kv(js: JetStreamContext, names: Names, ttl: float) -> KeyValue:
    try:
        return await js.key_value(names.workers_bucket)
    except (NotFoundError, Exception):  # BucketNotFoundError subclasses NotFoundError
        return await js.create_key_value(bucket=names.workers_bucket, ttl=ttl, history=1)


async def control_kv(js: JetStreamContext, names: Names) -> KeyValue:
    try:
        return await js.key_value(names.control_bucket)
    except (NotFoundError, Exception):
        return await js.create_key_value(bucket=names.control_bucket, history=1)


def work_consumer_config(names: Names, capability: str, ack_wait: float, max_deliver: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=names.work_consumer(capability),
        filter_subject=names.task_subject(capability),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=10_000,
    )


class WorkInbox:
    """One worker's way of taking work: a `no_wait` pull request for one message on a
    capability's consumer (JetStream answers at once, with the message or a 404 status), the
    answers arriving on one inbox of ours.

    nats-py's `fetch` only makes lingering requests. A worker with one free slot and several
    capabilities can keep only one of those open at a time (two could both deliver, and a
    message taken and handed back counts against `max_deliver`), so it went round its subjects
    one long poll after another and looked at each only now and then: measured, a database
    worker claiming directly took 10 of 12 pieces of a ladder. Asking without waiting, a sweep
    over seven subjects takes milliseconds.

    A message that arrives after its request timed out is kept and handed out by the next
    `take`: delivered is delivered, whichever request it answers."""

    def __init__(self, nc: Client, names: Names) -> None:
        self.nc = nc
        self.names = names
        self.inbox = nc.new_inbox()
        self._answers: asyncio.Queue[Msg] = asyncio.Queue()

    async def open(self) -> None:
        async def answered(msg: Msg) -> None:
            self._answers.put_nowait(msg)

        await self.nc.subscribe(self.inbox, cb=answered)

    def _waiting_message(self) -> Msg | None:
        """A message delivered earlier and not handed out yet; stale status answers dropped."""
        while not self._answers.empty():
            msg = self._answers.get_nowait()
            if not _status(msg):
                return msg
        return None

    async def take(self, capability: str, timeout: float) -> Msg | None:
        """The next message for `capability`, or None when it has none now. Raises nats'
        TimeoutError when JetStream did not answer (an unknown consumer gets no answer)."""
        waiting = self._waiting_message()
        if waiting is not None:
            return waiting
        await self.nc.publish(self.names.next_message_subject(capability), _NO_WAIT_ONE, reply=self.inbox)
        try:
            msg = await asyncio.wait_for(self._answers.get(), timeout)
        except TimeoutError:
            raise NatsTimeoutError from None
        return None if _status(msg) else msg


_NO_WAIT_ONE = b'{"batch":1,"no_wait":true}'


def _status(msg: Msg) -> str | None:
    """The status of a JetStream control answer (404 no messages, 408, 409), None for a message."""
    headers = msg.headers or {}
    return headers.get("Status")


async def ensure_work_consumer(js: JetStreamContext, names: Names, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update it to this config (idempotent)."""
    await js.add_consumer(names.work_stream, config)


def events_consumer_config(names: Names, ack_wait: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name="kernel",
        filter_subject=f"{names.prefix}.events.>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=50,
    )


async def delete_all(url: str, prefix: str) -> None:
    """Remove the streams and buckets of `prefix` (tests, and an operator's reset)."""
    names = Names(prefix)
    nc = await nats.connect(url, connect_timeout=2)
    try:
        js = nc.jetstream()
        for stream in (names.work_stream, names.events_stream):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
        for bucket in (names.workers_bucket, names.control_bucket):
            with contextlib.suppress(Exception):
                await js.delete_key_value(bucket)
    finally:
        await nc.close()
