# Over 400 lines: one NATS worker's pull loop, lease upkeep, registry heartbeat and drain share its state.
"""A worker in NATS mode: pulls claimable tasks from the work stream, holds no database.

Per message: `in_progress()` every third of AckWait while it is handled (a ten-minute encode
is never redelivered to another worker), a claim through a kernel (`rpc.claim`: the database
compare-and-set that bumps the fencing token; a refused claim means another run holds the
task, or it is finished), the handler with a `RemoteContext`, then the outcome as an event on
the events stream (stored before the message is settled) and `ack` (done, cancelled, dead),
`term` (permanent failure), or `nak(delay)` (transient failure with the engine's backoff, rate
limits, a lost or released run: the pointer stays for the next claim). `max_deliver` bounds the
redeliveries of one message. The run's `task <kind>` span continues the trace context of the
message's `traceparent` header (the enqueuer's span, put there by the kernel).

Lease upkeep is `rpc.heartbeat` every third of the lease (the reply says which runs still hold
their task and which were cancelled); registry heartbeats go to the KV bucket, and a drain
request comes from the control bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from reelhouse import __version__
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import (
    CircuitOpenError,
    LeaseLost,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from reelhouse.core.jobs.queue import ClaimedTask
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.remote import bus
from reelhouse.core.jobs.remote.context import RemoteContext
from reelhouse.core.jobs.remote.settings import NatsSettings
from reelhouse.core.jobs.retry import backoff_delay
from reelhouse.core.telemetry.correlation import correlation_scope
from reelhouse.core.telemetry.tracing import extract_headers, task_context

log = logging.getLogger("reelhouse.worker.nats")
RPC_TIMEOUT = 5.0
TAKE_TIMEOUT = 2.0
# An idle worker looks at its subjects this often even without a nudge: a message whose nak
# delay or AckWait ran out becomes deliverable again without anyone publishing.
IDLE_LOOK_SECONDS = 1.0
_current_task: contextvars.ContextVar[ClaimedTask | None] = contextvars.ContextVar("remote_task", default=None)


class _EventLogHandler(logging.Handler):
    """Task log lines (INFO and up) also go to the kernels as `log` events."""

    def __init__(self, worker: RemoteWorker) -> None:
        super().__init__(logging.INFO)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        task = _current_task.get()
        if task is None or record.name.startswith("nats"):
            return
        with contextlib.suppress(Exception):
            message = record.getMessage()[:2000]
            self.worker.spawn(self.worker.publish_event("log", task, level=record.levelname.lower(), message=message))


class RemoteWorker:
    def __init__(
        self,
        registry: TaskRegistry,
        *,
        url: str,
        settings: NatsSettings,
        worker_id: str,
        capabilities: list[str],
        concurrency: int = 1,
        info: dict[str, Any] | None = None,
        shutdown_grace: float = 20.0,
        progress_interval: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.url = url
        self.settings = settings
        self.names = bus.Names(settings.nats_prefix)
        self.id = worker_id
        self.capabilities = list(dict.fromkeys([*capabilities, *settings.extra_capabilities]))
        self.concurrency = concurrency
        self.info = {"cpu_count": os.cpu_count(), **(info or {})}
        self.shutdown_grace = shutdown_grace
        self.progress_interval = progress_interval
        self.clock = clock
        self.kinds = [k for k in registry.kinds.values() if k.remote]
        self._slots = asyncio.Semaphore(concurrency)
        self._woken = asyncio.Event()
        self._wake_tokens = {bus.token(c) for c in self.capabilities}
        self._running: dict[int, tuple[asyncio.Task[Any], ClaimedTask]] = {}
        self._handlers: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._lost: set[int] = set()
        self._cancelling: set[int] = set()
        self._releasing: set[int] = set()
        self._stopping = asyncio.Event()
        self._draining = False
        self._lease_seconds = 30.0
        self._event_seq = 0
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.kv: KeyValue | None = None
        self.control: KeyValue | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stopping.set()

    def request_drain(self) -> None:
        self._draining = True
        self._stopping.set()

    @property
    def status(self) -> str:
        if self._draining:
            return "draining"
        return "stopping" if self._stopping.is_set() else "running"

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self) -> None:
        self.nc = await bus.connect(self.url, f"reelhouse-worker-{self.id}", stop=self._stopping)
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, self.names)
        self.kv = await bus.workers_kv(self.js, self.names, self.settings.worker_ttl.total_seconds())
        self.control = await bus.control_kv(self.js, self.names)
        with contextlib.suppress(Exception):  # a drain asked of an earlier run of this worker
            await self.control.delete(self._control_key)
        handler = _EventLogHandler(self)
        logging.getLogger("reelhouse.task").addHandler(handler)
        await self._register()
        log.info(
            "NATS worker started",
            extra={"worker_id": self.id, "capabilities": ",".join(self.capabilities), "url": self.url},
        )
        inbox = bus.WorkInbox(self.nc, self.names)
        await inbox.open()
        await self.nc.subscribe(self.names.wake_subjects, cb=self._nudged)
        loops = [
            asyncio.create_task(self._registry_loop()),
            asyncio.create_task(self._lease_loop()),
            asyncio.create_task(self._take_loop(inbox)),
        ]
        try:
            await self._stopping.wait()
            await self._finish_running()
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._register(final="drained" if self._draining else "stopped")
            if self._draining:
                with contextlib.suppress(Exception):
                    await self.control.delete(self._control_key)
            if self._background:
                await asyncio.wait(list(self._background), timeout=5)
            logging.getLogger("reelhouse.task").removeHandler(handler)
            await bus.close_quietly(self.nc)
            log.info("NATS worker stopped", extra={"worker_id": self.id, "drained": self._draining})

    async def _finish_running(self) -> None:
        handlers = list(self._handlers)
        if not handlers:
            return
        grace = None if self._draining else self.shutdown_grace
        _done, pending = await asyncio.wait(handlers, timeout=grace)
        if pending:
            for runner, task in list(self._running.values()):
                self._releasing.add(task.id)
                runner.cancel()
            await asyncio.wait(pending, timeout=30)

    # ---- registry --------------------------------------------------------------------------
    @property
    def _key(self) -> str:
        return bus.token(self.id)

    @property
    def _control_key(self) -> str:
        return f"drain.{bus.token(self.id)}"

    def entry(self, status: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "capabilities": self.capabilities,
            "kinds": [k.name for k in self.kinds],
            "current_task_ids": sorted(self._running),
            "status": status or self.status,
            "version": __version__,
            "info": self.info,
            "drain_requested": self._draining,
        }

    async def _register(self, final: str | None = None) -> None:
        assert self.kv is not None
        try:
            await self.kv.put(self._key, bus.encode(self.entry(final)))
        except Exception as exc:
            log.warning("registry heartbeat failed: %s", exc)

    async def _registry_loop(self) -> None:
        interval = max(0.5, self.settings.worker_ttl.total_seconds() / 3)
        assert self.control is not None
        while True:
            await asyncio.sleep(interval)
            if not self._draining:
                with contextlib.suppress(KeyNotFoundError, Exception):
                    if await self.control.get(self._control_key):
                        log.info("drain requested: finishing current tasks, taking no more")
                        self.request_drain()
            await self._register()

    # ---- pulling ---------------------------------------------------------------------------
    async def _nudged(self, msg: Msg) -> None:
        if msg.subject.rsplit(".", 1)[-1] in self._wake_tokens:
            self._woken.set()

    def _consumer_config(self, capability: str) -> ConsumerConfig:
        return bus.work_consumer_config(
            self.names, capability, self.settings.ack_wait.total_seconds(), self.settings.max_deliver
        )

    async def _ensure_consumers(self, capabilities: list[str]) -> list[str]:
        """Create the consumers; returns those that could not be created (NATS unreachable)."""
        assert self.js is not None
        missing = []
        for capability in capabilities:
            try:
                await bus.ensure_work_consumer(self.js, self.names, self._consumer_config(capability))
            except Exception as exc:
                log.warning("cannot create the consumer for %s: %s", capability, exc)
                missing.append(capability)
        return missing

    async def _take_loop(self, inbox: bus.WorkInbox) -> None:
        """Whenever a slot is free, sweep the capabilities' subjects (starting one further
        each time, so none is always last) and run the first message found; with none, wait
        for a nudge from the kernel or IDLE_LOOK_SECONDS."""
        unready = await self._ensure_consumers(self.capabilities)
        start = 0
        while not self._stopping.is_set():
            if self.nc is None or not self.nc.is_connected:
                await asyncio.sleep(0.5)  # reconnecting: requests would only queue up
                continue
            if unready:
                unready = await self._ensure_consumers(unready)
            await self._slots.acquire()
            if self._stopping.is_set():
                self._slots.release()
                return
            self._woken.clear()  # before the sweep: a nudge during it means "look again"
            msg = None
            for offset in range(len(self.capabilities)):
                capability = self.capabilities[(start + offset) % len(self.capabilities)]
                try:
                    msg = await inbox.take(capability, TAKE_TIMEOUT)
                except NatsTimeout:
                    # JetStream did not answer: reconnecting, or it lost the consumer (a NATS
                    # restarted without its store): create it again before the next sweep.
                    if capability not in unready:
                        unready.append(capability)
                    continue
                if msg is not None:
                    break
            start = (start + 1) % max(1, len(self.capabilities))
            if msg is None:
                self._slots.release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), IDLE_LOOK_SECONDS)
                continue
            runner = asyncio.create_task(self._handle(msg))
            self._handlers.add(runner)
            runner.add_done_callback(self._handler_done)

    def _handler_done(self, runner: asyncio.Task[Any]) -> None:
        self._handlers.discard(runner)
        self._slots.release()

    async def _keep_in_progress(self, msg: Msg) -> None:
        interval = max(0.2, self.settings.ack_wait.total_seconds() / 3)
        while True:
            with contextlib.suppress(Exception):
                await msg.in_progress()
            await asyncio.sleep(interval)

    async def _handle(self, msg: Msg) -> None:
        try:
            doc = bus.decode(msg.data)
            task_id = int(doc["task_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed work message; terminated")
            await _settle(msg, "term")
            return
        kind = self.registry.get(str(doc.get("kind", "")))
        limit = kind.concurrency_per_worker if kind is not None else None
        busy = len([t for _, t in self._running.values() if kind is not None and t.kind == kind.name])
        if limit is not None and busy >= limit:
            await _settle(msg, "nak", 1.0)  # this kind's per-worker limit is reached: another worker may take it
            return
        ticker = asyncio.create_task(self._keep_in_progress(msg))
        try:
            action, delay = await self._claim_and_run(task_id, extract_headers(msg.headers))
        except Exception:
            log.exception("handling task %s failed", task_id)
            action, delay = "nak", 2.0
        finally:
            ticker.cancel()
        await _settle(msg, action, delay)

    async def _claim_and_run(self, task_id: int, trace_context: str | None = None) -> tuple[str, float]:
        reply = await self.rpc("claim", {"task_id": task_id, "owner": self.id, "capabilities": self.capabilities})
        if reply is None:
            return "nak", 2.0  # no kernel answered: try again shortly
        if not reply.get("ok"):
            reason = reply.get("reason")
            log.debug("claim of task %s refused: %s", task_id, reason)
            if reason in ("running", "waiting"):
                return "nak", float(reply.get("retry_in", 2.0))
            if reason == "capability":
                return "term", 0.0
            return "ack", 0.0  # finished or gone: the pointer is obsolete
        self._lease_seconds = float(reply.get("lease_seconds", self._lease_seconds))
        task = ClaimedTask(**reply["task"])
        if trace_context and not task.trace_context:
            task = dataclasses.replace(task, trace_context=trace_context)
        runner = asyncio.current_task()
        assert runner is not None
        self._running[task.id] = (runner, task)
        token = _current_task.set(task)
        try:
            with (
                correlation_scope(task.correlation_id),
                task_context(
                    task.trace_context,
                    f"task {task.kind}",
                    attributes={
                        "reelhouse.task_id": task.id,
                        "reelhouse.job_id": task.job_id,
                        "reelhouse.attempt": task.attempts,
                        "reelhouse.worker_id": self.id,
                    },
                ) as span,
            ):
                event, fields, action, delay = await self._run(task)
                span.set_attribute("reelhouse.outcome", event)
            # The outcome is stored on the events stream before the message is settled.
            await self.publish_event(event, task, durable=True, **fields)
        finally:
            _current_task.reset(token)
            self._running.pop(task.id, None)
            for marks in (self._lost, self._cancelling, self._releasing):
                marks.discard(task.id)
        return action, delay

    async def _run(self, task: ClaimedTask) -> tuple[str, dict[str, Any], str, float]:
        kind = self.registry.get(task.kind)
        if kind is None or not kind.remote:
            return (
                "failed",
                {"permanent": True, "reason": f"task kind {task.kind!r} is not run by NATS workers"},
                "term",
                0,
            )
        ctx = RemoteContext.build(
            task,
            self.id,
            lease_check=self._lease_check,
            progress_sink=self._progress_sink,
            progress_interval=self.progress_interval,
            stop_lost_run=functools.partial(self._stop, task.id, self._lost),
        )
        # Best effort like every log line, and off the run's path: awaited, its JetStream round
        # trip came before every handler (bench/distributed.py's dispatch overhead).
        self.spawn(
            self.publish_event("log", task, level="info", message=f"started on {self.id} (attempt {task.attempts})")
        )
        timeout = task.timeout_seconds or kind.timeout
        try:
            async with asyncio.timeout(timeout):
                result = await kind.handler(ctx)
        except asyncio.CancelledError:
            if task.id in self._lost:
                return "lost", {}, "nak", 1.0
            if task.id in self._releasing:
                return "released", {}, "nak", 0.0
            if task.id in self._cancelling:
                return "cancelled", {}, "ack", 0.0
            raise
        except LeaseLost as exc:
            log.warning("run stopped: %s", exc.reason)
            return "lost", {}, "nak", 1.0
        except TimeoutError:
            return self._transient(kind, task, f"timed out after {timeout:g}s")
        except PermanentError as exc:
            return "failed", {"permanent": True, "reason": exc.reason}, "term", 0.0
        except (RateLimitedError, CircuitOpenError) as exc:
            wait = max(0.0, (exc.retry_at - self.clock()).total_seconds())
            return "failed", {"reason": exc.reason, "delay": wait, "spend_attempt": False}, "nak", wait
        except Exception as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            return self._transient(kind, task, reason)
        return "completed", {"result": result}, "ack", 0.0

    def _transient(self, kind: TaskKind, task: ClaimedTask, reason: str) -> tuple[str, dict[str, Any], str, float]:
        delay = backoff_delay(task.attempts, base=kind.backoff_base, cap=kind.backoff_cap).total_seconds()
        last = task.attempts >= task.max_attempts
        # The last attempt ends the task dead in the database: the pointer goes too.
        return "failed", {"reason": reason, "delay": delay}, "ack" if last else "nak", delay

    def _stop(self, task_id: int, marks: set[int]) -> None:
        running = self._running.get(task_id)
        if running is not None and not running[0].done() and task_id not in marks:
            marks.add(task_id)
            running[0].cancel()

    # ---- talking to the kernels ------------------------------------------------------------
    async def rpc(self, name: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        assert self.nc is not None
        try:
            reply = await self.nc.request(self.names.rpc(name), bus.encode(doc), timeout=RPC_TIMEOUT)
        except Exception as exc:  # no responders (no kernel), timeout, reconnecting
            log.debug("rpc %s failed: %s", name, exc)
            return None
        answer: dict[str, Any] = bus.decode(reply.data)
        if answer.get("reason") == "error":
            # The kernel could not answer (its database restarting): no answer, not a "no".
            # Read as one, a heartbeat would stop every run as lost and a claim would ack the
            # task's only pointer away.
            log.debug("rpc %s: the kernel failed to answer", name)
            return None
        return answer

    async def _lease_check(self, task: ClaimedTask) -> tuple[bool, bool]:
        for attempt in range(5):
            reply = await self.rpc("lease", {"task_id": task.id, "fence": task.fence, "owner": self.id})
            if reply is not None:
                return bool(reply.get("held")), bool(reply.get("cancel"))
            await asyncio.sleep(0.5 * (attempt + 1))
        raise TransientError("no kernel answered the lease check (NATS or the kernels are unreachable)")

    async def _progress_sink(self, task: ClaimedTask, fraction: float, detail: dict[str, Any]) -> None:
        await self.publish_event("progress", task, fraction=fraction, detail=detail)

    async def publish_event(self, kind: str, task: ClaimedTask, *, durable: bool = False, **fields: Any) -> None:
        """Publish an event about a run. Durable ones (outcomes) are retried until the stream
        stored them; progress and logs are best effort."""
        assert self.js is not None
        self._event_seq += 1
        doc = {
            "type": kind,
            "task_id": task.id,
            "fence": task.fence,
            "attempt": task.attempts,
            "owner": self.id,
            "at": time.time(),
            **fields,
        }
        msg_id = f"{self.id}-{task.id}-{task.fence}-{kind}" if durable else f"{self.id}-{os.getpid()}-{self._event_seq}"
        delay = 0.2
        while True:
            try:
                await self.js.publish(
                    self.names.event_subject(kind), bus.encode(doc), timeout=5, headers={"Nats-Msg-Id": msg_id}
                )
                return
            except Exception as exc:
                if not durable:
                    log.debug("%s event not published: %s", kind, exc)
                    return
                log.warning("%s event for task %s not stored yet (%s); retrying", kind, task.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lease_loop(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(0.2)
            # Every third of the lease the kernel granted (known from the first claim).
            if not self._running or time.monotonic() - last < self._lease_seconds / 3:
                continue
            last = time.monotonic()
            leases = [[t.id, t.fence, t.attempts] for _, t in self._running.values()]
            reply = await self.rpc("heartbeat", {"owner": self.id, "leases": leases})
            if reply is None:
                continue  # keep running: the kernels may be restarting
            held, cancel = set(reply.get("held", [])), set(reply.get("cancel", []))
            for task_id, (runner, _task) in list(self._running.items()):
                if task_id not in held and not runner.done():
                    log.warning("lease lost; stopping our run", extra={"task_id": task_id})
                    self._stop(task_id, self._lost)
                elif task_id in cancel:
                    log.info("cancel requested", extra={"task_id": task_id})
                    self._stop(task_id, self._cancelling)


async def _settle(msg: Msg, action: str, delay: float = 0.0) -> None:
    try:
        if action == "ack":
            await msg.ack()
        elif action == "term":
            await msg.term()
        else:
            await msg.nak(delay=delay if delay > 0 else None)
    except Exception as exc:  # the server restarted: the message is redelivered and claimed again
        log.warning("could not %s the work message: %s", action, exc)
