"""Encode's job and worker events: found by polling the database, recorded once, fanned out.

Every API node polls (`ENCODE_EVENT_POLL_INTERVAL`) for encode jobs whose status changed and for
workers that came up or went away, and inserts one `encode_events` row per change under a key
that every node computes the same way (`job:<id>:<n>`: the job's n-th status change;
`worker:<id>:<started_at>:<online|offline>`). The unique key settles the race between nodes: the
node whose insert wins delivers the webhooks and counts the metric, so each event is delivered
and counted once however many nodes run. Subscribers in the process (the SSE routes) get every
event the node sees, plus progress ticks (not recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import jobs
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.jobs.workers_table import list_workers
from reelhouse.encode.assets import _writing as writing
from reelhouse.encode.models import encode_events, webhook_deliveries
from reelhouse.encode.service import JOB_KIND

log = logging.getLogger("reelhouse.encode.events")

JOB_EVENT = {
    "queued": "job.queued",
    "processing": "job.started",
    "completed": "job.completed",
    "failed": "job.failed",
    "dead": "job.failed",
    "cancelled": "job.cancelled",
}
EVENT_TYPES = ("job.created", *sorted(set(JOB_EVENT.values())), "worker.online", "worker.offline", "webhook.test")
# How far back a poll looks: a node that was down this long misses nothing shorter.
LOOKBACK = timedelta(minutes=10)
SUBSCRIBER_BUFFER = 256
# Recorded events and webhook delivery attempts are kept this long (the delivery log's history).
KEEP = timedelta(days=30)
PRUNE_EVERY = 600.0

Listener = Callable[[dict[str, Any]], Awaitable[None]]


def rfc3339(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


class EventFeed:
    def __init__(self, engine: AsyncEngine, *, stale_after: timedelta) -> None:
        self.engine = engine
        self.stale_after = stale_after
        # Called with each event this node recorded (webhooks, metrics).
        self.listeners: list[Listener] = []
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._progress: dict[int, float] = {}
        # What this node's subscribers last heard per job: another node may record a change
        # first, and this node's SSE clients must still hear of it.
        self._told: dict[int, str] = {}
        self._workers: dict[str, bool] | None = None

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def _fan_out(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled client loses ticks, not the server
                queue.put_nowait(event)

    async def _record(self, key: str, event_type: str, job_id: int | None, subject: str, data: dict[str, Any]) -> Any:
        try:
            async with writing(self.engine) as conn:
                row = (
                    (
                        await conn.execute(
                            insert(encode_events)
                            .values(
                                event_key=key,
                                event_type=event_type,
                                job_id=job_id,
                                subject=subject,
                                data=data,
                                created_at=utcnow(),
                            )
                            .returning(encode_events)
                        )
                    )
                    .mappings()
                    .one()
                )
        except IntegrityError:
            return None  # another node recorded it first
        return dict(row)

    async def poll(self) -> list[dict[str, Any]]:
        """One pass: record the changes seen since the last pass; returns the events recorded here."""
        recorded = [*(await self._poll_jobs()), *(await self._poll_workers())]
        for event in recorded:
            for listener in self.listeners:
                try:
                    await listener(event)
                except Exception:
                    log.exception("event listener failed", extra={"event": event["event_key"]})
        return recorded

    async def _poll_jobs(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            since = await database_time(conn) - LOOKBACK
            rows = (
                (
                    await conn.execute(
                        select(jobs.c.id, jobs.c.status, jobs.c.progress, jobs.c.error, jobs.c.updated_at)
                        .where(jobs.c.kind == JOB_KIND, jobs.c.updated_at >= since)
                        .order_by(jobs.c.id)
                        .limit(1000)
                    )
                )
                .mappings()
                .all()
            )
            if not rows:
                return []
            ids = [r["id"] for r in rows]
            seen = (
                await conn.execute(
                    select(encode_events.c.job_id, func.count(), func.max(encode_events.c.id))
                    .where(encode_events.c.job_id.in_(ids))
                    .group_by(encode_events.c.job_id)
                )
            ).all()
            last_ids = [row[2] for row in seen]
            last_status = dict(
                (
                    await conn.execute(
                        select(encode_events.c.job_id, encode_events.c.data).where(encode_events.c.id.in_(last_ids))
                    )
                ).all()
            )
        counts = {row[0]: row[1] for row in seen}
        recorded = []
        for row in rows:
            job_id, status = row["id"], row["status"]
            progress = round(float(row["progress"] or 0) * 100, 1)
            data = {"job_id": str(job_id), "status": status, "progress_pct": progress}
            if row["error"]:
                data["error_message"] = str(row["error"])[:1000]
            previous = last_status.get(job_id)
            n = counts.get(job_id, 0)
            event_type = "job.created" if n == 0 and status == "queued" else JOB_EVENT.get(status, "job." + status)
            if previous is None or previous.get("status") != status:
                event = await self._record(f"job:{job_id}:{n}", event_type, job_id, f"job:{job_id}", data)
                if event is not None:
                    recorded.append(event)
            if self._told.get(job_id) != status:  # whichever node recorded it, tell our subscribers
                self._told[job_id] = status
                self._fan_out({"event_type": event_type, **data})
            if self._progress.get(job_id) != progress and status == "processing":
                self._fan_out({"job_id": str(job_id), "event": "progress", "progress": progress, "status": status})
            self._progress[job_id] = progress
        if len(self._progress) > 10_000:
            self._progress.clear()
            self._told.clear()
        return recorded

    async def _poll_workers(self) -> list[dict[str, Any]]:
        workers = await list_workers(self.engine, self.stale_after)
        now = {f"{w['id']}|{w['started_at']}": bool(w["healthy"]) for w in workers}
        before, self._workers = self._workers, now
        recorded = []
        for key, healthy in now.items():
            if before is not None and before.get(key) == healthy:
                continue
            if before is None and not healthy:
                continue  # stale rows at start-up are not news
            worker_id, started_at = key.split("|", 1)
            state = "online" if healthy else "offline"
            data = {"worker_id": worker_id, "status": state, "started_at": started_at}
            event = await self._record(
                f"worker:{worker_id}:{started_at}:{state}"[:200], f"worker.{state}", None, f"worker:{worker_id}", data
            )
            if event is not None:
                recorded.append(event)
            self._fan_out({"event_type": f"worker.{state}", **data})
        return recorded

    async def prune(self, keep: timedelta = KEEP) -> int:
        """Drop events (and webhook delivery log rows) older than `keep`."""
        async with self.engine.connect() as conn:
            cutoff = await database_time(conn) - keep
        async with writing(self.engine) as conn:
            gone = (await conn.execute(delete(encode_events).where(encode_events.c.created_at < cutoff))).rowcount
            await conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.created_at < cutoff))
        return int(gone or 0)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + 60
        while not stop.is_set():
            try:
                await self.poll()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY
                    await self.prune()
            except Exception:
                log.exception("event poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
