"""The worker runtime: claims tasks, runs their handlers, keeps leases alive, shuts down cleanly.

One asyncio loop runs up to `concurrency` handlers. Housekeeping runs beside them: a heartbeat
extends this worker's leases (a lease it no longer holds stops that run); a watcher notices
cancel requests; a reaper returns tasks of vanished workers to the queue. On stop (SIGTERM) the
worker claims nothing more, lets running handlers finish for `shutdown_grace`, then cancels the
rest and gives their tasks back untouched.

Lease times come from the database's clock; the worker's own clock (`WorkerOptions.clock`)
only turns a provider's absolute "retry at" into a delay.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.batching import CompletionBatcher
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import CircuitOpenError, LeaseLost, PermanentError, RateLimitedError
from reelhouse.core.jobs.queue import ClaimedTask, Lease, TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.retry import backoff_delay
from reelhouse.core.jobs.states import Outcome
from reelhouse.core.jobs.workers_table import WorkerRecord
from reelhouse.core.telemetry.correlation import correlation_scope
from reelhouse.core.telemetry.metrics import TASK_RUN_SECONDS, TASK_TRANSITIONS
from reelhouse.core.telemetry.tracing import task_context

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
    clock: Callable[[], datetime] = utcnow  # this host's clock; never used for leases


class Worker:
    def __init__(self, engine: AsyncEngine, registry: TaskRegistry, options: WorkerOptions) -> None:
        self.engine = engine
        self.registry = registry
        self.options = options
        self.queue = TaskQueue(engine, hold_connections=True, settle_for=registry.settle_hook)
        self.record = WorkerRecord(engine, options.worker_id)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._leases: dict[int, Lease] = {}
        self._running_kinds: Counter[str] = Counter()
        self._cancelling: set[int] = set()
        self._releasing: set[int] = set()
        self._lost: set[int] = set()
        self._completing: set[int] = set()  # handler returned; the result is being written
        self._stopping = asyncio.Event()
        self._draining = False
        self._slot_freed = asyncio.Event()
        self._completions: CompletionBatcher[Lease] = CompletionBatcher(
            self.queue.succeed_many, give_up_after=max(5.0, options.lease.total_seconds())
        )

    @property
    def id(self) -> str:
        return self.options.worker_id

    def kinds(self) -> list[TaskKind]:
        names = self.options.kinds or list(self.registry.kinds)
        return [self.registry.kinds[n] for n in names if n in self.registry.kinds]

    def request_stop(self) -> None:
        self._stopping.set()

    def request_drain(self) -> None:
        """Take no more tasks, let the running ones finish however long they take, then stop."""
        self._draining = True
        self._stopping.set()

    async def run(self) -> None:
        await self.record.register(self.options.capabilities, [k.name for k in self.kinds()])
        log.info(
            "worker started",
            extra={"component": "worker", "worker_id": self.id, "concurrency": self.options.concurrency},
        )
        housekeeping = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._cancel_watch_loop()),
            asyncio.create_task(self._reaper_loop()),
        ]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for task in housekeeping:
                task.cancel()
            await asyncio.gather(*housekeeping, return_exceptions=True)
            await self.queue.aclose()
            await self.record.mark_stopped(drained=self._draining)
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
        waiters = [asyncio.create_task(self._stopping.wait()), asyncio.create_task(self._slot_freed.wait())]
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
                        self.id,
                        [kind.name],
                        room,
                        self.options.lease,
                        self.options.capabilities,
                        global_limit=kind.concurrency_global,
                    )
            room = free - len(claimed)
            if free_kinds and room > 0:
                claimed += await self.queue.claim(
                    self.id, free_kinds, room, self.options.lease, self.options.capabilities
                )
        except Exception:  # the database may be restarting: keep the worker alive and retry
            log.exception("claim failed", extra={"component": "worker"})
            await asyncio.sleep(self.options.poll_interval)
        return claimed

    def _start(self, task: ClaimedTask) -> None:
        self._running_kinds[task.kind] += 1
        self._leases[task.id] = task.lease
        runner = asyncio.create_task(self._run(task), name=f"task-{task.id}")
        self._running[task.id] = runner
        runner.add_done_callback(functools.partial(self._finished, task))

    def _finished(self, task: ClaimedTask, _runner: object = None) -> None:
        self._running.pop(task.id, None)
        self._leases.pop(task.id, None)
        self._running_kinds[task.kind] -= 1
        for marks in (self._cancelling, self._releasing, self._lost, self._completing):
            marks.discard(task.id)
        self._slot_freed.set()

    # ---- running -------------------------------------------------------------------------
    async def _run(self, task: ClaimedTask) -> None:
        kind = self.registry.get(task.kind)
        with correlation_scope(task.correlation_id):
            extra = {"component": "worker", "task_id": task.id, "kind": task.kind, "attempt": task.attempts}
            if kind is None:
                await self.queue.fail_permanently(task.lease, f"unknown task kind {task.kind!r}")
                return
            ctx = TaskContext(
                task=task,
                queue=self.queue,
                owner=self.id,
                logger=logging.getLogger(f"reelhouse.task.{task.kind}"),
                progress_interval=self.options.progress_interval,
                stop_lost_run=functools.partial(self._stop_lost, task.id),
            )
            started = time.monotonic()
            with task_context(
                task.trace_context,
                f"task {task.kind}",
                attributes={
                    "reelhouse.task_id": task.id,
                    "reelhouse.job_id": task.job_id,
                    "reelhouse.attempt": task.attempts,
                },
            ) as span:
                outcome = await self._execute(kind, task, ctx, extra)
                span.set_attribute("reelhouse.outcome", str(outcome))
            TASK_TRANSITIONS.labels(task.kind, outcome).inc()
            TASK_RUN_SECONDS.labels(task.kind, outcome).observe(time.monotonic() - started)

    async def _execute(self, kind: TaskKind, task: ClaimedTask, ctx: TaskContext, extra: dict[str, Any]) -> str:
        timeout = task.timeout_seconds or kind.timeout
        lease = task.lease
        try:
            async with asyncio.timeout(timeout):
                result = await kind.handler(ctx)
                if kind.finish is not None:
                    result = await kind.finish(ctx, result)
        except asyncio.CancelledError:
            if task.id in self._lost:
                log.warning("lease lost; run stopped, nothing recorded", extra=extra)
                return Outcome.LOST
            if task.id in self._releasing:
                await asyncio.shield(self.queue.release(lease))
                log.info("task released on shutdown", extra=extra)
                return Outcome.RELEASED
            if task.id in self._cancelling:
                await asyncio.shield(self.queue.mark_cancelled(lease))
                log.info("task cancelled", extra=extra)
                return Outcome.CANCELLED
            raise
        except LeaseLost as exc:
            log.warning("run stopped: %s", exc.reason, extra=extra)
            return Outcome.LOST
        except TimeoutError:
            return await self._retry(kind, task, f"timed out after {timeout:g}s", extra)
        except PermanentError as exc:
            await self.queue.fail_permanently(lease, exc.reason)
            log.warning("task failed permanently: %s", exc.reason, extra=extra)
            return Outcome.FAILED
        except (RateLimitedError, CircuitOpenError) as exc:
            outcome = Outcome.RATE_LIMITED if isinstance(exc, RateLimitedError) else Outcome.CIRCUIT_OPEN
            # The provider's time was turned into an absolute one on this host's clock; the
            # wait is re-based on the database's.
            delay = max(timedelta(0), exc.retry_at - self.options.clock())
            await self.queue.retry_later(lease, exc.reason, delay, error_class=outcome, spend_attempt=False)
            log.info("task waits until %s: %s", exc.retry_at.isoformat(), exc.reason, extra=extra)
            return outcome
        except Exception as exc:  # anything unclassified is assumed transient
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            return await self._retry(kind, task, reason, extra)
        self._completing.add(task.id)
        if not await self._completions.submit(lease, result):
            log.warning("lease lost before completion; result dropped", extra=extra)
            return Outcome.LOST
        return Outcome.SUCCEEDED

    async def _retry(self, kind: TaskKind, task: ClaimedTask, reason: str, extra: dict[str, Any]) -> str:
        delay = backoff_delay(task.attempts, base=kind.backoff_base, cap=kind.backoff_cap)
        status = await self.queue.retry_later(task.lease, reason, delay)
        if status is None:
            log.warning("lease lost before the failure was recorded: %s", reason, extra=extra)
            return Outcome.LOST
        if status == states.DEAD:
            log.error("task dead: %s", reason, extra=extra)  # no retry follows: no retry_in_s
        else:
            log.warning("task will retry: %s", reason, extra={**extra, "retry_in_s": round(delay.total_seconds(), 2)})
        return Outcome.DEAD if status == states.DEAD else Outcome.RETRIED

    def _stop_lost(self, task_id: int) -> None:
        """The run's lease is gone: stop it through cancellation (subprocesses included)."""
        runner = self._running.get(task_id)
        if runner is not None and not runner.done() and task_id not in self._lost:
            self._lost.add(task_id)
            runner.cancel()

    # ---- housekeeping --------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = max(0.2, self.options.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                held = [lease for i, lease in self._leases.items() if i not in self._completing]
                still_ours = await self.queue.heartbeat(held, self.options.lease)
                for lease in held:
                    lost = lease.task_id
                    # The lease is gone (we stalled past it; maybe another run has the task):
                    # stop our copy, which can no longer write anything anyway.
                    if lost in still_ours or lost in self._completing or lost not in self._running:
                        continue
                    if not self._running[lost].done():
                        log.warning("lease lost; stopping our run", extra={"task_id": lost, "fence": lease.fence})
                        self._stop_lost(lost)
                if await self.record.heartbeat(list(self._running)) and not self._draining:
                    log.info("drain requested: finishing current tasks, taking no more", extra={"worker_id": self.id})
                    self.request_drain()
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
                    log.warning("requeued %d tasks with expired leases", reaped, extra={"component": "worker"})
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
        grace = None if self._draining else self.options.shutdown_grace
        _done, pending = await asyncio.wait(runners, timeout=grace)
        for runner in pending:
            task_id = next((i for i, t in self._running.items() if t is runner), None)
            if task_id is not None:
                self._releasing.add(task_id)
            runner.cancel()
        if pending:
            await asyncio.wait(pending)
