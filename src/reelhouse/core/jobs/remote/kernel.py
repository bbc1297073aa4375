# Over 400 lines: the kernel's publisher, request answerer and event applier share one NATS connection and state.
"""The kernel side of remote workers: any `serve` node with the database runs it.

- **dispatch**: queued, runnable tasks of remote kinds are published on
  `<prefix>.tasks.<capability>` (`Nats-Msg-Id: t<id>-f<fence>`: kernels dispatching at once
  store one message); the claim through `rpc.claim` records the fence the pointer was used
  for (`tasks.dispatched_fence`), so a requeued task whose pointer is still in the stream is
  not published twice. A queued task is published again after NATS_REDISPATCH_AFTER (NATS lost
  its data, `max_deliver` ran out). The task's stored trace context rides along as the
  message's `traceparent`/`tracestate` headers.
- **rpc**: claim, heartbeat and lease checks answered from the database (queue group: one
  kernel answers each request).
- **events**: one durable consumer shared by the kernels applies progress and outcomes, each a
  compare-and-set on the run's fencing token (queue.py): a late or duplicate event finds the
  token moved on (or the task finished) and changes nothing. The message is acked after the
  database write, so a kernel that dies mid-event leaves it to the next.
- **registry**: NATS workers' KV entries are mirrored into `workers` (what `/v1/workers` and
  `/status` read); drain requests in `workers.drain_requested` are copied to the control
  bucket; queued tasks no live worker can run say "waiting for a worker with capability X".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import tasks, workers
from reelhouse.core.jobs import states
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.errors import LeaseLost, PermanentError
from reelhouse.core.jobs.queue import ClaimedTask, Lease, TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.remote import bus
from reelhouse.core.jobs.remote.settings import NatsSettings
from reelhouse.core.jobs.retry import backoff_delay
from reelhouse.core.jobs.workers_table import list_workers, mark_remote_gone, upsert_remote
from reelhouse.core.telemetry.tracing import inject_headers

log = logging.getLogger("reelhouse.kernel.nats")
WAITING_STAGE = "waiting"
DISPATCH_BATCH = 200
# Tasks whose events a kernel applies at once (each holds a database connection meanwhile; the
# engine's pool also serves claims and heartbeats).
EVENT_CONCURRENCY = 8


def waiting_text(capability: str) -> str:
    return f"waiting for a worker with capability {capability}"


class KernelBridge:
    def __init__(
        self,
        engine: AsyncEngine,
        registry: TaskRegistry,
        *,
        url: str,
        settings: NatsSettings,
        lease: timedelta,
        stale_after: timedelta,
        name: str = "kernel",
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.url = url
        self.settings = settings
        self.names = bus.Names(settings.nats_prefix)
        self.lease = lease
        self.stale_after = stale_after
        self.name = name
        self.queue = TaskQueue(engine, settle_for=registry.settle_hook)
        self.remote_kinds = sorted(k.name for k in registry.kinds.values() if k.remote)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.kv: KeyValue | None = None
        self.control: KeyValue | None = None
        self._seen: dict[str, int] = {}
        self._pending: set[asyncio.Task[Any]] = set()
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.nc = await bus.connect(self.url, f"reelhouse-{self.name}", stop=stop)
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, self.names)
        self.kv = await bus.workers_kv(self.js, self.names, self.settings.worker_ttl.total_seconds())
        self.control = await bus.control_kv(self.js, self.names)
        group = self.names.kernel_group
        for name, answer in (("claim", self._claim), ("heartbeat", self._heartbeat), ("lease", self._lease)):
            await self.nc.subscribe(self.names.rpc(name), queue=group, cb=self._responder(answer))
        self.connected.set()
        log.info("NATS kernel started", extra={"url": self.url, "prefix": self.names.prefix})
        loops = [
            asyncio.create_task(self._every(self.settings.dispatch_interval.total_seconds(), self.dispatch)),
            asyncio.create_task(self._events_loop(stop)),
            asyncio.create_task(self._every(max(0.5, self.settings.worker_ttl.total_seconds() / 3), self.mirror)),
            asyncio.create_task(self._every(1.0, self.mark_waiting)),
            asyncio.create_task(self._every(max(0.5, self.lease.total_seconds() / 2), self.reap)),
        ]
        try:
            await stop.wait()
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=5)
            await bus.close_quietly(self.nc)
            await self.queue.aclose()

    async def _every(self, interval: float, step: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting, the database restarting: next round
                log.warning("%s failed: %s", getattr(step, "__name__", "step"), exc)
            await asyncio.sleep(interval)

    # ---- dispatch ----------------------------------------------------------------------------
    async def dispatch(self) -> int:
        """Publish queued, runnable remote tasks that have no pointer in the work stream."""
        if not self.remote_kinds or self.js is None:
            return 0
        stale = db_now(-self.settings.redispatch_after.total_seconds())
        query = (
            select(tasks.c.id, tasks.c.kind, tasks.c.fence, tasks.c.required_capability, tasks.c.trace_context)
            .where(
                tasks.c.status == states.QUEUED,
                tasks.c.run_after <= db_now(),
                tasks.c.kind.in_(self.remote_kinds),
                or_(
                    tasks.c.dispatched_fence.is_(None),
                    tasks.c.dispatched_fence != tasks.c.fence,
                    tasks.c.dispatched_at < stale,
                ),
            )
            .order_by(tasks.c.priority.desc(), tasks.c.run_after, tasks.c.id)
            .limit(DISPATCH_BATCH)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        published: list[dict[str, int]] = []
        nudge: set[str] = set()
        try:
            for row in rows:
                doc = {"task_id": row.id, "kind": row.kind, "fence": row.fence}
                # The enqueuer's trace context (`traceparent`): the worker's run continues it.
                headers = inject_headers({"Nats-Msg-Id": bus.task_msg_id(row.id, row.fence)}, row.trace_context or "")
                await self.js.publish(
                    self.names.task_subject(row.required_capability),
                    bus.encode(doc),
                    timeout=5,
                    headers=dict(headers),
                )
                published.append({"task_id": row.id, "task_fence": row.fence})
                nudge.add(self.names.wake_subject(row.required_capability))
        finally:
            if self.nc is not None:
                for subject in nudge:  # idle workers of these capabilities look at once
                    with contextlib.suppress(Exception):
                        await self.nc.publish(subject, b"")
            # One transaction for the batch, also when a publish failed part way (a commit per
            # task made a burst's dispatch the kernel's slowest step). Should the kernel die
            # before it, the next round publishes again and the stream's dedupe drops the copies.
            if published:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(tasks)
                        .where(tasks.c.id == bindparam("task_id"), tasks.c.fence == bindparam("task_fence"))
                        .values(dispatched_fence=tasks.c.fence, dispatched_at=db_now()),
                        published,
                    )
        return len(rows)

    async def reap(self) -> None:
        reaped = await self.queue.reap_expired_leases()
        if reaped:
            log.warning("requeued %d tasks with expired leases", reaped)

    # ---- rpc ---------------------------------------------------------------------------------
    def _responder(self, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Any:
        async def callback(msg: Msg) -> None:
            # Answered concurrently: the subscription's callbacks otherwise run one at a time.
            task = asyncio.create_task(self._reply(msg, answer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        return callback

    async def _reply(self, msg: Msg, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        try:
            doc = await answer(bus.decode(msg.data))
        except Exception as exc:
            log.warning("rpc on %s failed: %s", msg.subject, exc)
            doc = {"ok": False, "reason": "error", "retry_in": 2.0}
        with contextlib.suppress(Exception):
            await msg.respond(bus.encode(doc))

    async def _claim(self, doc: dict[str, Any]) -> dict[str, Any]:
        owner = str(doc["owner"])[:255]
        result = await self.queue.claim_task(int(doc["task_id"]), owner, self.lease, list(doc.get("capabilities", [])))
        if isinstance(result, str):
            retry_in = self.lease.total_seconds() / 2 if result == "running" else 1.0
            return {"ok": False, "reason": result, "retry_in": retry_in}
        log.info("task %s claimed by NATS worker %s (fence %s)", result.id, owner, result.fence)
        return {"ok": True, "task": dataclasses.asdict(result), "lease_seconds": self.lease.total_seconds()}

    async def _heartbeat(self, doc: dict[str, Any]) -> dict[str, Any]:
        owner = str(doc["owner"])[:255]
        leases = [Lease(int(t), int(f), owner, int(a)) for t, f, a in doc.get("leases", [])][:1000]
        held = await self.queue.heartbeat(leases, self.lease)
        cancel = await self.queue.cancel_requested([lease.task_id for lease in leases]) if leases else set()
        return {"held": sorted(held), "cancel": sorted(cancel)}

    async def _lease(self, doc: dict[str, Any]) -> dict[str, Any]:
        lease = Lease(int(doc["task_id"]), int(doc["fence"]), str(doc["owner"])[:255])
        held = await self.queue.still_holds(lease)
        cancel = bool(await self.queue.cancel_requested([lease.task_id]))
        return {"held": held, "cancel": cancel}

    # ---- events ------------------------------------------------------------------------------
    async def _events_loop(self, stop: asyncio.Event) -> None:
        assert self.js is not None
        config = bus.events_consumer_config(self.names, max(30.0, self.lease.total_seconds()))
        subscription = None
        while not stop.is_set():
            try:
                if subscription is None:
                    subscription = await self.js.pull_subscribe(
                        f"{self.names.prefix}.events.>",
                        durable="kernel",
                        stream=self.names.events_stream,
                        config=config,
                    )
                messages = await subscription.fetch(64, timeout=1)
            except (TimeoutError, NatsTimeout):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("events fetch failed: %s", exc)
                if "consumer" in str(exc).lower():
                    subscription = None
                await asyncio.sleep(0.5)
                continue
            docs: list[Any] = []
            for msg in messages:
                try:
                    docs.append(bus.decode(msg.data))
                except ValueError:
                    docs.append(None)  # not JSON: apply_many counts it as failed
            for msg, applied in zip(messages, await self.apply_many(docs), strict=True):
                with contextlib.suppress(Exception):
                    await (msg.ack() if applied else msg.nak(delay=1))

    async def apply_many(self, docs: list[Any]) -> list[bool]:
        """Apply a fetched batch: each task's events in order, different tasks' at the same time
        (bounded), so one slow outcome write does not hold up the others (applied one by one,
        the events consumer capped a kernel at ~40 task outcomes a second: bench/distributed.py).
        Tasks are independent here as they are between kernels sharing the consumer. Returns,
        per event, whether it was applied (the others are redelivered)."""
        applied = [False] * len(docs)
        by_task: dict[str, list[int]] = {}
        for index, doc in enumerate(docs):
            key = doc.get("task_id") if isinstance(doc, dict) else None
            by_task.setdefault(str(key) if key is not None else f"bad-{index}", []).append(index)
        slots = asyncio.Semaphore(EVENT_CONCURRENCY)

        async def run(indexes: list[int]) -> None:
            async with slots:
                for index in indexes:
                    try:
                        await self.apply(docs[index])
                    except Exception:
                        log.exception("event not applied; redelivered later")
                        continue
                    applied[index] = True

        await asyncio.gather(*(run(indexes) for indexes in by_task.values()))
        return applied

    async def apply(self, doc: dict[str, Any]) -> None:
        """Apply one worker event to the database, fenced by the run's token."""
        kind = doc.get("type")
        lease = Lease(
            int(doc["task_id"]), int(doc["fence"]), str(doc.get("owner", ""))[:255], int(doc.get("attempt", 0))
        )
        extra = {"task_id": lease.task_id, "fence": lease.fence, "worker_id": lease.owner}
        if kind == "progress":
            detail = doc.get("detail") or None
            await self.queue.save_progress(lease, float(doc.get("fraction", 0.0)), detail)
        elif kind == "log":
            level = logging.WARNING if doc.get("level") in ("warning", "error", "critical") else logging.INFO
            log.log(
                level, "[%s] task %s: %s", lease.owner, lease.task_id, str(doc.get("message", ""))[:2000], extra=extra
            )
        elif kind == "completed":
            await self._completed(lease, doc.get("result"), extra)
        elif kind == "failed":
            await self._failed(lease, doc, extra)
        elif kind == "cancelled":
            if not await self.queue.mark_cancelled(lease):
                await self._pointer_gone(lease)
        elif kind == "released":
            await self.queue.release(lease)
        elif kind == "lost":
            log.info("NATS worker %s lost its run of task %s", lease.owner, lease.task_id, extra=extra)

    async def _task_kind(self, task_id: int) -> tuple[ClaimedTask, TaskKind | None] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).mappings().first()
        if row is None:
            return None
        task = ClaimedTask(
            id=row["id"],
            job_id=row["job_id"],
            kind=row["kind"],
            payload=row["payload"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            correlation_id=row["correlation_id"],
            timeout_seconds=row["timeout_seconds"],
            fence=row["fence"],
            owner=row["lease_owner"] or "",
            lost_attempts=row["lost_attempts"],
            max_lost_attempts=row["max_lost_attempts"],
        )
        return task, self.registry.get(row["kind"])

    async def _completed(self, lease: Lease, result: Any, extra: dict[str, Any]) -> None:
        found = await self._task_kind(lease.task_id)
        if found is None:
            return
        task, kind = found
        if kind is not None and kind.finish is not None:
            claimed = dataclasses.replace(task, fence=lease.fence, owner=lease.owner, attempts=lease.attempt)
            ctx = TaskContext(
                task=claimed,
                queue=self.queue,
                owner=lease.owner,
                logger=logging.getLogger(f"reelhouse.task.{kind.name}"),
            )
            try:
                result = await kind.finish(ctx, result)
            except LeaseLost:
                log.warning("late result of task %s refused (fence %s)", lease.task_id, lease.fence, extra=extra)
                await self._pointer_gone(lease)
                return
            except PermanentError as exc:
                await self.queue.fail_permanently(lease, exc.reason)
                return
            except Exception as exc:
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                delay = backoff_delay(lease.attempt, base=kind.backoff_base, cap=kind.backoff_cap)
                await self.queue.retry_later(lease, f"finishing failed: {reason}", delay)
                return
        if await self.queue.succeed(lease, result):
            log.info("task %s succeeded on NATS worker %s", lease.task_id, lease.owner, extra=extra)
        else:
            log.warning("late result of task %s refused (fence %s)", lease.task_id, lease.fence, extra=extra)
            await self._pointer_gone(lease)

    async def _pointer_gone(self, lease: Lease) -> None:
        """The worker settled its message (ack/term) but its outcome was refused (the lease had
        lapsed): once the reaper requeues the task it needs a new pointer."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.id == lease.task_id, tasks.c.fence == lease.fence)
                .values(dispatched_fence=None)
            )

    async def _failed(self, lease: Lease, doc: dict[str, Any], extra: dict[str, Any]) -> None:
        reason = str(doc.get("reason") or "failed")[:4000]
        if doc.get("permanent"):
            if not await self.queue.fail_permanently(lease, reason):
                await self._pointer_gone(lease)
            return
        delay = timedelta(seconds=max(0.0, float(doc.get("delay", 0.0))))
        spend = bool(doc.get("spend_attempt", True))
        status = await self.queue.retry_later(
            lease, reason, delay, error_class="transient" if spend else "rate_limited", spend_attempt=spend
        )
        if status is None:
            log.warning("late failure of task %s refused (fence %s)", lease.task_id, lease.fence, extra=extra)
            await self._pointer_gone(lease)

    # ---- registry ----------------------------------------------------------------------------
    async def mirror(self) -> None:
        """Copy NATS workers' registry entries into `workers`; push drain requests out."""
        assert self.kv is not None and self.control is not None
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            keys = []
        present: set[str] = set()
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except Exception:
                continue
            if entry is None or entry.value is None:
                continue
            doc = bus.decode(entry.value)
            present.add(str(doc.get("id")))
            if self._seen.get(key) == entry.revision:
                continue  # no heartbeat since the last look: last_heartbeat stays where it was
            self._seen[key] = entry.revision or 0
            await upsert_remote(self.engine, doc)
        gone = await mark_remote_gone(self.engine, present)
        for worker_id in gone:
            log.warning("NATS worker %s stopped heartbeating", worker_id)
        async with self.engine.connect() as conn:
            draining = (
                (
                    await conn.execute(
                        select(workers.c.id).where(
                            workers.c.transport == "nats",
                            workers.c.drain_requested.is_(True),
                            workers.c.status.in_(["running", "stopping"]),
                        )
                    )
                )
                .scalars()
                .all()
            )
        for worker_id in draining:
            await self.control.put(f"drain.{bus.token(worker_id)}", b"1")

    async def mark_waiting(self) -> None:
        """Say which queued tasks no live worker can run, and clear it once one can."""
        listed = await list_workers(self.engine, self.stale_after)
        live = [w for w in listed if w["healthy"] and not w["drain_requested"]]
        remote = set(self.remote_kinds)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(tasks.c.id, tasks.c.kind, tasks.c.required_capability, tasks.c.progress_detail)
                    .where(
                        tasks.c.status == states.QUEUED,
                        or_(tasks.c.kind.in_(sorted(remote)), tasks.c.required_capability.is_not(None)),
                    )
                    .limit(1000)
                )
            ).all()
        for row in rows:
            need = row.required_capability or (bus.DEFAULT_CAPABILITY if row.kind in remote else None)
            able = any(
                row.kind in w["kinds"]
                and (
                    need is None
                    or need in w["capabilities"]
                    or (w["transport"] == "database" and not row.required_capability)
                )
                for w in live
            )
            detail = row.progress_detail if isinstance(row.progress_detail, dict) else None
            waiting = detail is not None and detail.get("stage") == WAITING_STAGE
            if not able and need is not None:
                text = waiting_text(need)
                if (detail is None or waiting) and (detail or {}).get("waiting_for") != text:
                    await self._set_detail(row.id, {"stage": WAITING_STAGE, "waiting_for": text, "capability": need})
            elif able and waiting:
                await self._set_detail(row.id, None)

    async def _set_detail(self, task_id: int, detail: dict[str, Any] | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status == states.QUEUED)
                .values(progress_detail=detail)
            )


async def nats_status(bridge: KernelBridge) -> dict[str, Any]:
    """The `nats` section of `/status`: connection and what waits for a capability."""
    async with bridge.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(tasks.c.id, tasks.c.job_id, tasks.c.progress_detail).where(tasks.c.status == states.QUEUED)
            )
        ).all()
    waiting = [
        {"task_id": r.id, "job_id": r.job_id, "waiting_for": r.progress_detail["waiting_for"]}
        for r in rows
        if isinstance(r.progress_detail, dict) and r.progress_detail.get("stage") == WAITING_STAGE
    ][:50]
    connected = bool(bridge.nc is not None and bridge.nc.is_connected)
    return {"nats": {"connected": connected, "prefix": bridge.names.prefix, "waiting_for_capability": waiting}}
