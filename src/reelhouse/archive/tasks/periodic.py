"""The archive's periodic tasks: discovery, the back-catalog walk and retention.

`vod.discover` runs every VOD_PROCESS_INTERVAL (newest archives of each watched channel, then
a sweep that gives every unprocessed VOD without live work a job), `vod.catalog` every
VOD_CATALOG_BACKFILL_INTERVAL (paced back-catalog walk) and `vod.retention` every
RETENTION_INTERVAL. The two intervals operators may change at run time through `/config`
(VOD_PROCESS_INTERVAL, RETENTION_INTERVAL) are checked against the time of the last run on
each tick, so an override takes effect without a restart. The last-run times are kv rows with
vod-tender's keys and time format, which its runbooks read.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from reelhouse.archive import metrics
from reelhouse.archive.catalog import Catalog
from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.retention import as_result, run_housekeeping
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.kv import KV
from reelhouse.core.telemetry.tracing import span

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.periodic")

_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%f"
NO_CREDENTIALS = "TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET not set"


def kv_timestamp(when: datetime) -> str:
    """vod-tender's kv time format: `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC)."""
    return when.strftime(_TIMESTAMP)[:-3] + "Z"


def parse_kv_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _due(store: KV, key: str, channel: str, every: timedelta) -> bool:
    last = parse_kv_timestamp(await store.get(key, channel))
    # 10% slack: a tick that fires a little early must not skip a whole period.
    return last is None or utcnow() - last >= every * 0.9


async def discover_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    store = services.kv
    settings = await services.current_settings()
    channel = ctx.payload.get("channel")
    if channel is None:  # the periodic tick: fan out to channels that are due
        fanned = []
        for name in await services.watched_channels():
            if await _due(store, "job_vod_discovery_last", name, settings.vod_process_interval):
                await ctx.enqueue_next(
                    ArchiveTask.DISCOVER,
                    {"channel": name},
                    max_attempts=3,
                    idempotency_key=f"vod.discover:{name}:{ctx.payload.get('period_start')}",
                )
                fanned.append(name)
        if not fanned:
            await ctx.mark_idle()  # a tick with nothing due is not worth keeping for 14 days
        return {"channels": fanned}
    new_ids: list[str] = []
    result: dict[str, Any] = {"channel": channel}
    with span("discovery", {"vod.channel": channel}) as step:  # the VOD jobs it creates continue this trace
        if services.helix is not None and channel:
            catalog = Catalog(services.vods, services.channels, services.kv, services.helix)
            new_ids = await catalog.discover_latest(channel, limit=settings.vod_discovery_limit)
        else:
            result["skipped"] = f"discovery: {NO_CREDENTIALS}"
        job_ids = await services.vod_jobs.enqueue_pending(channel)
        step.set_attributes({"discovery.new_vods": len(new_ids), "discovery.jobs_created": len(job_ids)})
    stamp = kv_timestamp(utcnow())
    for key in ("job_vod_process_last", "job_vod_discovery_last"):
        await store.set(key, stamp, channel)
        await store.set(key, stamp, "")
    metrics.PROCESSING_CYCLES.labels(channel).inc()
    if not new_ids and not job_ids:
        await ctx.mark_idle()
    return {**result, "discovered": new_ids, "jobs_created": len(job_ids)}


async def catalog_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    store = services.kv
    settings = await services.current_settings()
    channel = ctx.payload.get("channel")
    if channel is None:
        names = await services.watched_channels()
        for name in names:
            await ctx.enqueue_next(
                ArchiveTask.CATALOG,
                {"channel": name},
                max_attempts=3,
                idempotency_key=f"vod.catalog:{name}:{ctx.payload.get('period_start')}",
            )
        return {"channels": names}
    if services.helix is None:
        await ctx.mark_idle()
        return {"channel": channel, "skipped": NO_CREDENTIALS}
    # /admin/vod/catalog may ask for a one-off limit; periodic runs use the settings.
    max_count = int(ctx.payload.get("max") or settings.vod_catalog_max)
    max_age_days = int(ctx.payload.get("max_age_days") or settings.vod_catalog_max_age_days)
    catalog = Catalog(services.vods, services.channels, services.kv, services.helix)
    result = await catalog.backfill(
        channel,
        max_count=max_count,
        max_age_days=max_age_days,
        page_size=settings.vod_catalog_page_size,
        page_delay=settings.vod_catalog_page_delay.total_seconds(),
    )
    job_ids = await services.vod_jobs.enqueue_pending(channel)
    stamp = kv_timestamp(utcnow())
    await store.set("job_vod_catalog_last", stamp, channel)
    await store.set("job_vod_backfill_last", stamp, channel)
    return {
        "channel": channel,
        "pages": result.pages,
        "seen": result.seen,
        "inserted": len(result.inserted),
        "complete": result.complete,
        "jobs_created": len(job_ids),
    }


async def retention_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    store = services.kv
    settings = await services.current_settings()
    if not ctx.payload.get("force") and not await _due(
        store, "job_vod_retention_last", "", settings.retention_interval
    ):
        return {"skipped": "not due"}
    report = await run_housekeeping(services.vods, services.files.data_dir, settings)
    await store.set("job_vod_retention_last", kv_timestamp(utcnow()))
    return as_result(report)
