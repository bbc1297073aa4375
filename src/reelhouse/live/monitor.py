"""The live monitor (`reelhouse serve`, next to the ingest): every LIVE_MONITOR_INTERVAL it reads
nginx's statistics, stores each live stream's telemetry and sets the gauges; a stream the
database says is live but the ingest does not carry (nginx restarted, a lost callback) is
ended after two readings.

It also keeps every live stream transcoded: the engine retries a live transcode itself (30
attempts, lost runs included), but a task can still end for good while its publisher is on
the ingest (attempts exhausted, a permanent error, a cancel by mistake), and then the stream
would have no HLS until it is published again. Such a task is replaced by a new one in the
same job, after a backoff that grows with each replacement, at most LIVE_TRANSCODE_REVIVALS
times a session; the count and the current task's state are in the telemetry
(`transcode`, `transcode_revivals`), the metrics and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.exc import IntegrityError

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.retry import ceiling
from reelhouse.live import kinds
from reelhouse.live.ingest import RateMeter, read_stat
from reelhouse.live.lifecycle import ENDED_BADLY, LIVE_TASK_OPTIONS, go_offline, transcodes_of
from reelhouse.live.metrics import TRANSCODE_GIVEN_UP, TRANSCODE_REVIVED, set_stream_gauges
from reelhouse.live.services import LiveServices

log = logging.getLogger("reelhouse.live.monitor")

REVIVE_BACKOFF_CAP = 60.0
GIVEN_UP = "given_up"


@dataclass
class MonitorState:
    """What the monitor remembers between readings (all of it can be lost: a restart only
    delays the next bitrate by one window and repeats a give-up log line)."""

    missing: dict[int, int] = field(default_factory=dict)
    meters: dict[int, RateMeter] = field(default_factory=dict)
    given_up: set[tuple[int, int]] = field(default_factory=set)  # (stream, session) already logged
    polls: int = 0


async def keep_transcoding(services: LiveServices, stream: dict[str, Any], state: MonitorState) -> dict[str, Any]:
    """Replace the live transcode of `stream` (live on the ingest) when it ended for good.
    Returns the telemetry fields that say how the transcode stands."""
    stream_id, session, job_id = int(stream["id"]), int(stream["session"]), stream["job_id"]
    if job_id is None:
        return {}
    async with services.store.engine.connect() as conn:
        rows = await transcodes_of(conn, job_id)
    if not rows:
        return {}
    latest, revivals = rows[-1], len(rows) - 1
    standing: dict[str, Any] = {"transcode": str(latest.status), "transcode_revivals": revivals}
    if latest.status not in ENDED_BADLY:
        return standing
    where = {"component": "live", "stream_id": stream_id, "session": session, "task_id": latest.id}
    if revivals >= services.settings.transcode_revivals:
        standing["transcode"] = GIVEN_UP
        if (stream_id, session) not in state.given_up:
            state.given_up.add((stream_id, session))
            TRANSCODE_GIVEN_UP.inc()
            log.error(
                "live transcode %s while live, %d replacements already: the stream has no HLS until it is "
                "published again (%s)", latest.status, revivals, (latest.last_error or "")[:300], extra=where,
            )  # fmt: skip
        return standing
    # Each replacement waits longer: a transcode that cannot work (a permanent error) is tried
    # a handful of times over minutes, not in a loop.
    base = services.settings.transcode_revive_backoff.total_seconds()
    delay = ceiling(revivals + 1, base=base, cap=max(base, REVIVE_BACKOFF_CAP))
    try:
        async with services.store.tx() as conn:
            current = await services.store.get_stream(stream_id, conn)
            if not current["is_live"] or current["session"] != session or current["job_id"] != job_id:
                return standing  # ended (or published anew) since the reading
            enqueued = await TaskQueue(services.store.engine).enqueue(
                kinds.KIND_TRANSCODE, {"stream_id": stream_id, "session": session, "revival": revivals + 1},
                job_id=job_id, conn=conn, run_after=timedelta(seconds=delay), priority=10,
                idempotency_key=f"live:{stream_id}:{session}:transcode:revival:{revivals + 1}",
                required_capability=kinds.TRANSCODE_CAPABILITY, **LIVE_TASK_OPTIONS,
            )  # fmt: skip
    except IntegrityError:  # another monitor replaced it first
        return standing
    if enqueued.created:
        TRANSCODE_REVIVED.labels(str(latest.status)).inc()
        log.warning(
            "live transcode %s while live; replaced by task %d in %.0fs (replacement %d of %d): %s",
            latest.status, enqueued.task_id, delay, revivals + 1, services.settings.transcode_revivals,
            (latest.last_error or "")[:300], extra=where,
        )  # fmt: skip
        standing.update(transcode=states.QUEUED, transcode_revivals=revivals + 1)
    return standing


async def poll_once(services: LiveServices, client: httpx.AsyncClient, state: MonitorState) -> None:
    stats = await read_stat(services.settings, client)
    live: dict[str, dict[str, object]] = {}
    now = utcnow()
    streams = await services.store.live_streams()
    for stream in streams:
        stream_id = int(stream["id"])
        found = stats.get(stream["playback_id"])
        if found is None or not found.publishing:
            state.missing[stream_id] = state.missing.get(stream_id, 0) + 1
            age = (now - stream["live_since"]).total_seconds() if stream["live_since"] else 99
            if state.missing[stream_id] >= 2 and age > 5:
                async with services.store.tx() as conn:
                    await go_offline(services, conn, stream_id)
                log.warning("stream not on the ingest; ended", extra={"component": "live", "stream_id": stream_id})
            continue
        state.missing.pop(stream_id, None)
        bitrate = state.meters.setdefault(stream_id, RateMeter()).add(found)
        transcode = await keep_transcoding(services, stream, state)
        telemetry = {**found.telemetry(bitrate), **transcode, "viewers": services.viewers.count(stream_id)}
        await services.store.save_telemetry(stream_id, telemetry, now)
        live[str(stream_id)] = telemetry
    for gone in set(state.meters) - {int(s["id"]) for s in streams}:
        del state.meters[gone]
    set_stream_gauges(live)
    state.polls += 1


async def run_monitor(services: LiveServices, stop: asyncio.Event, state: MonitorState | None = None) -> None:
    state = state or MonitorState()
    interval = services.settings.monitor_interval.total_seconds()
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            try:
                await poll_once(services, client, state)
            except (httpx.HTTPError, OSError) as exc:
                log.debug("ingest statistics unavailable: %s", exc, extra={"component": "live"})
            except Exception:
                log.exception("live monitor failed", extra={"component": "live"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
