"""The worker runtime: claims tasks, runs their handlers, keeps leases alive, shuts down cleanly.

One asyncio loop runs up to `concurrency` handlers. Housekeeping runs beside them: a heartbeat
extends this worker's leases and notices cancel requests; a reaper returns tasks of vanished
workers to the queue. On stop (SIGTERM) the worker claims nothing more, lets running handlers
finish for `shutdown_grace`, then cancels the rest and gives their tasks back untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.batching import CompletionBatcher
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import CircuitOpenError, PermanentError, RateLimitedError
from reelhouse.core.jobs.queue import ClaimedTask, TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.retry import backoff_delay
from reelhouse.core.jobs.workers_table import WorkerRecord
from reelhouse.core.telemetry.correlation import correlation_scope
from reelhouse.core.telemetry.metrics import TASK_RUN_SECONDS, TASK_TRANSITIONS
from reelhouse.core.telemetry.tracing import tracer

log = logging.getLogger("reelhouse.worker")


@dataclass
class WorkerOptions:
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = 4
    lease: timedelta = timedelta(seconds=30)
    poll_interval: float = 1.0
    cancel_poll_interval: float = 0.5
    shutdown_grace: float = 20.0
    capabilities: list[str] = field(default_factory=list)
    kinds: list[str] | None = None  # None: every registered kind
    progress_interval: float = 2.0


class Worker:
    def __init__(self, engine: AsyncEngine, registry: TaskRegistry, options: WorkerOptions) -> None:
        self.engine = engine
        self.registry = registry
        self.options = options
        self.queue = TaskQueue(engine)
        self.record = WorkerRecord(engine, options.worker_id)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._running_kinds: Counter[str] = Counter()
        self._cancelling: set[int] = set()
        self._releasing: set[int] = set()
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._completions = CompletionBatcher(lambda results: self.queue.succeed_many(self.id, results),
                                              give_up_after=max(5.0, options.lease.total_seconds()))

    @property
    def id(self) -> str:
        return self.options.worker_id

    def kinds(self) -> list[TaskKind]:
        names = self.options.kinds or list(self.registry.kinds)
        return [self.registry.kinds[n] for n in names if n in self.registry.kinds]

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.record.register(self.options.capabilities, [k.name for k in self.kinds()])
        log.info("worker started", extra={"component": "worker", "worker_id": self.id,
                                          "concurrency": self.options.concurrency})
        housekeeping = [asyncio.create_task(self._heartbeat_loop()),
                        asyncio.create_task(self._cancel_watch_loop()),
                        asyncio.create_task(self._reaper_loop())]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for task in housekeeping:
                task.cancel()
            await asyncio.gather(*housekeeping, return_exceptions=True)
            await self.record.mark_stopped()
            log.info("worker stopped", extra={"component": "worker", "worker_id": self.id})

    # ---- claiming ------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            claimed = await self._claim_batch()
            for task in claimed:
                self._start(task)
            self._slot_freed.clear()
            full = len(self._running) >= self.options.concurrency
            if claimed and not full:
                continue  # the queue had work and we have room: ask again at once
            # Full: sleep until a handler finishes. Idle: poll again after poll_interval.
            await self._wait_for_wakeup(timeout=None if full else self.options.poll_interval)

    async def _wait_for_wakeup(self, timeout: float | None) -> None:
        waiters = [asyncio.create_task(self._stopping.wait()),
                   asyncio.create_task(self._slot_freed.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()

    async def _claim_batch(self) -> list[ClaimedTask]:
        free = self.options.concurrency - len(self._running)
        if free <= 0:
            return []
        free_kinds, limited = [], []
        for kind in self.kinds():
            if kind.concurrency_per_worker is None and kind.concurrency_global is None:
                free_kinds.append(kind.name)
            else:
                limited.append(kind)
        claimed: list[ClaimedTask] = []
        try:
            for kind in limited:
                room = free - len(claimed)
                if kind.concurrency_per_worker is not None:
                    room = min(room, kind.concurrency_per_worker - self._running_kinds[kind.name])
                if room > 0:
                    claimed += await self.queue.claim(
                        self.id, [kind.name], room, self.options.lease, self.options.capabilities,
                        global_limit=kind.concurrency_global)
            room = free - len(claimed)
            if free_kinds and room > 0:
                claimed += await self.queue.claim(self.id, free_kinds, room, self.options.lease,
                                                  self.options.capabilities)
        except Exception:  # the database may be restarting: keep the worker alive and retry
            log.exception("claim failed", extra={"component": "worker"})
            await asyncio.sleep(self.options.poll_interval)
        return claimed

    def _start(self, task: ClaimedTask) -> None:
        self._running_kinds[task.kind] += 1
        runner = asyncio.create_task(self._run(task), name=f"task-{task.id}")
        self._running[task.id] = runner
        runner.add_done_callback(lambda _t, task=task: self._finished(task))

    def _finished(self, task: ClaimedTask) -> None:
        self._running.pop(task.id, None)
        self._running_kinds[task.kind] -= 1
        self._cancelling.discard(task.id)
        self._releasing.discard(task.id)
        self._slot_freed.set()

    # ---- running -------------------------------------------------------------------------
    async def _run(self, task: ClaimedTask) -> None:
        kind = self.registry.get(task.kind)
        with correlation_scope(task.correlation_id):
            extra = {"component": "worker", "task_id": task.id, "kind": task.kind,
                     "attempt": task.attempts}
            if kind is None:
                await self.queue.fail_permanently(task.id, self.id, f"unknown task kind {task.kind!r}")
                return
            ctx = TaskContext(task=task, queue=self.queue, owner=self.id,
                              logger=logging.getLogger(f"reelhouse.task.{task.kind}"),
                              progress_interval=self.options.progress_interval)
            started = time.monotonic()
            with tracer.start_as_current_span(f"task {task.kind}", attributes={
                    "reelhouse.task_id": task.id, "reelhouse.job_id": task.job_id,
                    "reelhouse.attempt": task.attempts}) as span:
                outcome = await self._execute(kind, task, ctx, extra)
                span.set_attribute("reelhouse.outcome", outcome)
            TASK_TRANSITIONS.labels(task.kind, outcome).inc()
            TASK_RUN_SECONDS.labels(task.kind, outcome).observe(time.monotonic() - started)

    async def _execute(self, kind: TaskKind, task: ClaimedTask, ctx: TaskContext,
                       extra: dict[str, Any]) -> str:
        timeout = task.timeout_seconds or kind.timeout
        try:
            async with asyncio.timeout(timeout):
                result = await kind.handler(ctx)
        except asyncio.CancelledError:
            if task.id in self._releasing:
                await asyncio.shield(self.queue.release(task.id, self.id))
                log.info("task released on shutdown", extra=extra)
                return "released"
            if task.id in self._cancelling:
                await asyncio.shield(self.queue.mark_cancelled(task.id, self.id))
                log.info("task cancelled", extra=extra)
                return states.CANCELLED
            raise
        except TimeoutError:
            return await self._retry(kind, task, f"timed out after {timeout:g}s", extra)
        except PermanentError as exc:
            await self.queue.fail_permanently(task.id, self.id, exc.reason)
            log.warning("task failed permanently: %s", exc.reason, extra=extra)
            return states.FAILED
        except (RateLimitedError, CircuitOpenError) as exc:
            error_class = "rate_limited" if isinstance(exc, RateLimitedError) else "circuit_open"
            await self.queue.retry_later(task.id, self.id, exc.reason, exc.retry_at, task.attempts,
                                         task.max_attempts, error_class, spend_attempt=False)
            log.info("task waits until %s: %s", exc.retry_at.isoformat(), exc.reason, extra=extra)
            return error_class
        except Exception as exc:  # anything unclassified is assumed transient
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            return await self._retry(kind, task, reason, extra)
        if not await self._completions.submit(task.id, result):
            log.warning("lease lost before completion; result dropped", extra=extra)
            return "lost"
        return states.SUCCEEDED

    async def _retry(self, kind: TaskKind, task: ClaimedTask, reason: str, extra: dict[str, Any]) -> str:
        delay = backoff_delay(task.attempts, base=kind.backoff_base, cap=kind.backoff_cap)
        outcome = await self.queue.retry_later(task.id, self.id, reason, utcnow() + delay,
                                               task.attempts, task.max_attempts)
        level = logging.ERROR if outcome == states.DEAD else logging.WARNING
        log.log(level, "task %s: %s", "dead" if outcome == states.DEAD else "will retry", reason,
                extra={**extra, "retry_in_s": round(delay.total_seconds(), 2)})
        return "retried" if outcome == states.QUEUED else outcome

    # ---- housekeeping --------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = max(0.2, self.options.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                ids = list(self._running)
                still_ours = await self.queue.heartbeat(self.id, ids, self.options.lease)
                for lost in set(ids) - still_ours - self._cancelling:
                    # Someone else owns it now (we stalled past the lease): stop our copy.
                    if lost in self._running and not self._running[lost].done():
                        log.warning("lease lost; stopping our run", extra={"task_id": lost})
                        self._running[lost].cancel()
                await self.record.heartbeat(ids)
            except Exception:
                log.exception("heartbeat failed", extra={"component": "worker"})

    async def _cancel_watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.cancel_poll_interval)
            try:
                for task_id in await self.queue.cancel_requested(list(self._running)):
                    if task_id in self._running and task_id not in self._cancelling:
                        self._cancelling.add(task_id)
                        self._running[task_id].cancel()
            except Exception:
                log.exception("cancel watch failed", extra={"component": "worker"})

    async def _reaper_loop(self) -> None:
        interval = max(0.5, self.options.lease.total_seconds() / 2)
        while True:
            try:
                reaped = await self.queue.reap_expired_leases()
                if reaped:
                    log.warning("requeued %d tasks with expired leases", reaped,
                                extra={"component": "worker"})
                    self._slot_freed.set()
            except Exception:
                log.exception("reaper failed", extra={"component": "worker"})
            await asyncio.sleep(interval)

    async def _drain(self) -> None:
        if not self._running:
            return
        await self.record.mark_stopping()
        runners = list(self._running.values())  # re-read: some may have finished meanwhile
        if not runners:
            return
        _done, pending = await asyncio.wait(runners, timeout=self.options.shutdown_grace)
        for runner in pending:
            task_id = next((i for i, t in self._running.items() if t is runner), None)
            if task_id is not None:
                self._releasing.add(task_id)
            runner.cancel()
        if pending:
            await asyncio.wait(pending)
