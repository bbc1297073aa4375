"""Archive metrics with vod-tender's names (seed 003), each one updated by the code that does
the work; moving averages (`avg_*_ms`) in kv for /status.

Differences from vod-tender, on purpose: counters carry a `channel` label (vod-tender's were
unlabeled, so channels overwrote each other's gauges); a download attempt counts once as
started and once as succeeded or failed (vod-tender double-counted, so its failure-rate alert
could pass 100%); `vod_processing_cycles_total` counts discovery runs, not picked VODs (so
"no cycles" really means the scheduler stopped); the breaker gauges are set on every
transition and refreshed from kv at scrape time (vod-tender set "open" on any failure).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.models import vods
from reelhouse.core.db.engine import write_connection
from reelhouse.core.jobs.circuit import STATE_CODES, BreakerState
from reelhouse.core.jobs.kv import EMA_ALPHA, get_value, set_value
from reelhouse.core.telemetry.metrics import CIRCUIT_OPEN, CIRCUIT_STATE, counter, gauge, histogram

DOWNLOAD_BUCKETS = (60, 300, 600, 1800, 3600, 7200)  # 1m 5m 10m 30m 1h 2h
UPLOAD_BUCKETS = (30, 60, 120, 300, 600, 1800)  # 30s 1m 2m 5m 10m 30m
TOTAL_BUCKETS = (60, 300, 900, 1800, 3600, 7200)  # 1m 5m 15m 30m 1h 2h
STEP_BUCKETS = tuple(sorted(set(DOWNLOAD_BUCKETS + UPLOAD_BUCKETS + TOTAL_BUCKETS)))


DOWNLOADS_STARTED = counter("vod_downloads_started_total", "Download attempts started", ("channel",))
DOWNLOADS_SUCCEEDED = counter("vod_downloads_succeeded_total", "Download attempts that finished", ("channel",))
DOWNLOADS_FAILED = counter("vod_downloads_failed_total", "Download attempts that failed", ("channel",))
UPLOADS_SUCCEEDED = counter("vod_uploads_succeeded_total", "Uploads to YouTube that finished", ("channel",))
UPLOADS_FAILED = counter("vod_uploads_failed_total", "Upload attempts that failed", ("channel",))
PROCESSING_CYCLES = counter("vod_processing_cycles_total", "Discovery/processing cycles run", ("channel",))
CIRCUIT_FAILURES = counter("vod_circuit_breaker_failures_total", "Failures counted by circuit breakers", ("channel",))
CIRCUIT_CHANGES = counter("circuit_breaker_state_changes_total", "Circuit breaker state transitions", ("from", "to"))
DOWNLOAD_SECONDS = histogram("vod_download_duration_seconds", "Download duration", buckets=DOWNLOAD_BUCKETS)
UPLOAD_SECONDS = histogram("vod_upload_duration_seconds", "Upload duration", buckets=UPLOAD_BUCKETS)
TOTAL_SECONDS = histogram(
    "vod_processing_total_duration_seconds",
    "From the first download attempt to the end of the upload",
    buckets=TOTAL_BUCKETS,
)
STEP_SECONDS = histogram(
    "vod_processing_step_duration_seconds", "Duration of one processing step", ("step",), buckets=STEP_BUCKETS
)
QUEUE_DEPTH = gauge("vod_queue_depth", "Unprocessed VODs (placeholders excluded)", ("channel",))


def unprocessed_condition():
    return (vods.c.processed.is_(False)) & (vods.c.is_placeholder.is_(False))


async def queue_depth_by_channel(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(vods.c.channel, func.count()).where(unprocessed_condition()).group_by(vods.c.channel)
            )
        ).all()
    return dict(rows)


async def refresh_archive_gauges(runtime: Any) -> None:
    """Runs before each /metrics scrape: the queue gauge mirrors the vods table, so every API
    node reports the same value whichever worker did the work."""
    depth = await queue_depth_by_channel(runtime.engine)
    QUEUE_DEPTH.clear()
    for channel, count in depth.items():
        QUEUE_DEPTH.labels(channel).set(count)
    if not depth:
        QUEUE_DEPTH.labels("").set(0)


def observe_step(step: str, seconds: float) -> None:
    STEP_SECONDS.labels(step).observe(seconds)
    {"download": DOWNLOAD_SECONDS, "upload": UPLOAD_SECONDS, "total": TOTAL_SECONDS}[step].observe(seconds)


async def record_average(engine: AsyncEngine, key: str, milliseconds: float, channel: str) -> None:
    """EMA per channel, and across channels under channel '' (what /status shows by default).

    Same formula as `KV.update_ema`, but read and write happen in one BEGIN IMMEDIATE
    transaction: on SQLite a deferred transaction that reads and then writes fails with
    "database is locked" when another worker wrote in between (it cannot upgrade its lock)."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            for scope in dict.fromkeys((channel, "")):
                previous = await get_value(conn, key, scope)
                ema = milliseconds if previous is None else EMA_ALPHA * milliseconds + (1 - EMA_ALPHA) * float(previous)
                await set_value(conn, key, str(round(ema)), scope)
    finally:
        await conn.close()


def breaker_changed(before: str, after: BreakerState) -> None:
    CIRCUIT_STATE.labels(after.scope).set(STATE_CODES[after.state])
    CIRCUIT_OPEN.labels(after.scope).set(1 if after.state == "open" else 0)
    if before != after.state:
        CIRCUIT_CHANGES.labels(before, after.state).inc()
