"""Archive pipeline glue: task kinds, periodic tasks, the per-VOD job, and /status fields.

A VOD's work is one job (kind `vod.archive`) made of a `vod.download` task that, on success,
adds a `vod.upload` task to the same job. `vods.job_id` points at the VOD's current job. The
job engine supplies what vod-tender's processing loop did by hand (and did wrong, §12.1):
real parallelism bounded by MAX_CONCURRENT_DOWNLOADS, retries with backoff that spend the
attempt budget once per attempt, permanent errors that fail at once, rate limits and open
circuits that wait without spending attempts, leases so a killed worker's task resumes
elsewhere, and cancellation that reaches yt-dlp.

Periodic tasks: `vod.discover` every VOD_PROCESS_INTERVAL (newest archives of each watched
channel, then a sweep that gives every unprocessed VOD without live work a job), `vod.catalog`
every VOD_CATALOG_BACKFILL_INTERVAL (paced back-catalog walk) and `vod.retention` every
RETENTION_INTERVAL. The two intervals operators may change at run time through `/config`
(VOD_PROCESS_INTERVAL, RETENTION_INTERVAL) are checked against the time of the last run on
each tick, so an override takes effect without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive import catalog, metrics
from reelhouse.archive.channels import watched_channels
from reelhouse.archive.download import download_task
from reelhouse.archive.models import vods
from reelhouse.archive.retention import as_result, channel_directory, run_housekeeping
from reelhouse.archive.settings import ArchiveSettings, archive_settings
from reelhouse.archive.settings_overrides import apply_overrides, load_overrides
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.twitch.helix import HelixClient
from reelhouse.archive.upload import upload_task
from reelhouse.archive.youtube import YouTubeClient
from reelhouse.config import format_duration
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.circuit import CircuitBreaker
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.scheduler import PeriodicTask
from reelhouse.core.runtime import Runtime

log = logging.getLogger("reelhouse.archive.pipeline")

JOB_KIND = "vod.archive"
_VOD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it becomes part of a file name
_SERVICES: weakref.WeakKeyDictionary[AsyncEngine, ArchiveServices] = weakref.WeakKeyDictionary()
_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%f"


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


@dataclass
class ArchiveServices:
    """What the archive's handlers share in one process: settings, clients, paths."""

    runtime: Runtime
    base: ArchiveSettings
    tokens: TokenStore
    _helix: HelixClient | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self.runtime.engine

    @property
    def breaker(self) -> CircuitBreaker:
        return self.runtime.breaker

    @property
    def data_dir(self) -> Path:
        return self.runtime.settings.server.data_dir

    async def settings(self) -> ArchiveSettings:
        """Environment settings with the operator's `/config` overrides on top, read per task."""
        return apply_overrides(self.base, await load_overrides(self.engine))  # type: ignore[return-value]

    def vod_path(self, channel: str, twitch_vod_id: str) -> Path:
        if not _VOD_ID.fullmatch(twitch_vod_id):
            raise PermanentError(f"vod id {twitch_vod_id!r} cannot name a file")
        return channel_directory(self.data_dir, channel) / f"twitch_{twitch_vod_id}.mp4"

    def helix(self) -> HelixClient | None:
        if not (self.base.twitch_client_id and self.base.twitch_client_secret):
            return None
        if self._helix is None:
            self._helix = HelixClient(self.base.twitch_client_id, self.base.twitch_client_secret,
                                      api_base=self.base.twitch_api_base, auth_base=self.base.twitch_auth_base)
        return self._helix

    async def youtube(self, channel: str) -> YouTubeClient | None:
        """A new client for the channel's YouTube token (the caller closes it), or None while
        uploads cannot be authorized. New per upload: the token is read from the database each
        time, so a re-authorization through any API node is used at once (a cached client would
        keep refreshing a revoked token)."""
        if not (self.base.yt_client_id and self.base.yt_client_secret):
            return None
        if await self.tokens.load_for_channel("youtube", channel) is None:
            return None
        load, save = self.tokens.youtube_callbacks(channel)
        return YouTubeClient(
            self.base.yt_client_id, self.base.yt_client_secret, load_tokens=load, save_tokens=save,
            redirect_uri=self.base.yt_redirect_uri or None, api_base=self.base.youtube_api_base,
            oauth_base=self.base.youtube_oauth_base)

    async def media_for_upload(self, settings: ArchiveSettings, row: Any) -> Path:
        """The file to upload: the download, or its TRANSCODE_BEFORE_UPLOAD encode. The encode is
        kept until the upload is confirmed, so a resumed session sends the same bytes."""
        source = Path(row.downloaded_path)
        profile_name = settings.transcode_profile
        if profile_name is None:
            return source
        target = source.with_name(source.stem + ".transcoded.mp4")  # clean_after_upload removes it
        if not target.is_file():  # encode_mp4 moves its output into place only when complete
            from reelhouse.core.media import builtin_profile, encode_mp4

            await encode_mp4(source, target, builtin_profile(profile_name), settings=self.runtime.settings.media)
        return target

    def clean_after_upload(self, settings: ArchiveSettings, row: Any) -> bool:
        """Delete what a confirmed upload made redundant (always the transcoded copy, the
        download itself under BACKFILL_AUTOCLEAN); True when the download went."""
        source = Path(row.downloaded_path)
        source.with_name(source.stem + ".transcoded.mp4").unlink(missing_ok=True)
        if not settings.backfill_autoclean:
            return False
        source.unlink(missing_ok=True)
        return True

    async def aclose(self) -> None:
        if self._helix is not None:
            await self._helix.aclose()


def services_for(engine: AsyncEngine) -> ArchiveServices | None:
    """The services `register` created for this engine's runtime (None before registration)."""
    return _SERVICES.get(engine)


def _base_settings_for(engine: AsyncEngine) -> ArchiveSettings:
    services = _SERVICES.get(engine)
    return services.base if services is not None else ArchiveSettings()


# ---- the per-VOD job ----------------------------------------------------------------------------

async def enqueue_vod(engine: AsyncEngine, twitch_vod_id: str, *, reprocess: bool = False) -> int:
    """Create the VOD's `vod.archive` job with its `vod.download` task and store `vods.job_id`;
    returns the job id. Idempotent: without `reprocess` an existing job is returned; with it a
    new generation follows the current job (the caller cancels that job first). The key is
    `vod:<id>:g<n>`, n derived from the job being superseded, so callers racing to create the
    same job all get the same one."""
    return await _enqueue(engine, twitch_vod_id, reprocess=reprocess, supersede=None)


async def _enqueue(engine: AsyncEngine, twitch_vod_id: str, *, reprocess: bool, supersede: int | None) -> int:
    async with engine.connect() as conn:
        row = (await conn.execute(select(vods).where(vods.c.twitch_vod_id == twitch_vod_id))).first()
        if row is None:
            raise LookupError(f"vod {twitch_vod_id} not found")
        if row.is_placeholder:
            raise ValueError(f"vod {twitch_vod_id} is a live placeholder; it has no archive to download yet")
        if supersede is not None and row.job_id != supersede:
            return int(row.job_id)  # someone else already moved this VOD to a newer job
        current = None
        if row.job_id is not None:
            current = (await conn.execute(select(jobs.c.id, jobs.c.idempotency_key)
                                          .where(jobs.c.id == row.job_id))).first()
    if current is not None and not reprocess:
        return int(current.id)
    generation = 0
    if current is not None:
        match = re.fullmatch(rf"vod:{re.escape(twitch_vod_id)}:g(\d+)", current.idempotency_key or "")
        generation = int(match.group(1)) + 1 if match else 1
    settings = apply_overrides(_base_settings_for(engine), await load_overrides(engine))
    enqueued = await TaskQueue(engine).enqueue(
        "vod.download", {"vod_id": twitch_vod_id, "channel": row.channel, "generation": generation},
        job_kind=JOB_KIND, priority=row.priority, max_attempts=settings.download_max_attempts,
        idempotency_key=f"vod:{twitch_vod_id}:g{generation}",
    )
    async with engine.begin() as conn:
        values: dict[str, Any] = {"job_id": enqueued.job_id, "updated_at": utcnow()}
        if enqueued.created:
            values["download_state"] = "pending"
        # Compare-and-set: never point the row back at an older job than it already has.
        await conn.execute(update(vods).where(
            vods.c.twitch_vod_id == twitch_vod_id,
            (vods.c.job_id.is_(None)) | (vods.c.job_id <= enqueued.job_id)).values(**values))
    return enqueued.job_id


async def enqueue_pending(engine: AsyncEngine, channel: str, *, limit: int = 500) -> list[int]:
    """Give a job to every unprocessed VOD of `channel` without live work: new rows (discovery,
    catalog, chat reconciliation, API) and rows an operator reset with the runbook SQL
    (`processing_error=NULL`, `processed=false`). A job cancelled while still queued never ran
    a handler, so its row is marked cancelled here rather than silently re-enqueued."""
    query = (select(vods.c.twitch_vod_id, vods.c.job_id, jobs.c.status)
             .select_from(vods.outerjoin(jobs, jobs.c.id == vods.c.job_id))
             .where(vods.c.channel == channel, vods.c.processed.is_(False), vods.c.is_placeholder.is_(False),
                    vods.c.processing_error.is_(None),
                    (vods.c.job_id.is_(None)) | (jobs.c.id.is_(None)) | jobs.c.status.in_(states.JOB_FINAL))
             .order_by(vods.c.priority.desc(), vods.c.date.asc()).limit(limit))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    created = []
    for vod_id, job_id, status in rows:
        if status == states.JOB_CANCELLED:
            async with engine.begin() as conn:
                await conn.execute(update(vods).where(vods.c.twitch_vod_id == vod_id).values(
                    processing_error="cancelled by operator", download_state="canceled", updated_at=utcnow()))
            continue
        created.append(await _enqueue(engine, vod_id, reprocess=job_id is not None, supersede=job_id))
    return created


# ---- periodic handlers ----------------------------------------------------------------------------

async def _due(store: KV, key: str, channel: str, every: timedelta) -> bool:
    last = parse_kv_timestamp(await store.get(key, channel))
    # 10% slack: a tick that fires a little early must not skip a whole period.
    return last is None or utcnow() - last >= every * 0.9


async def discover_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    engine, store = services.engine, KV(services.engine)
    settings = await services.settings()
    channel = ctx.payload.get("channel")
    if channel is None:  # the periodic tick: fan out to channels that are due
        fanned = []
        for name in await watched_channels(engine, settings.channels):
            if await _due(store, "job_vod_discovery_last", name, settings.vod_process_interval):
                await ctx.enqueue_next("vod.discover", {"channel": name}, max_attempts=3,
                                       idempotency_key=f"vod.discover:{name}:{ctx.payload.get('period_start')}")
                fanned.append(name)
        return {"channels": fanned}
    new_ids: list[str] = []
    helix = services.helix()
    if helix is not None and channel:
        new_ids = await catalog.discover_latest(engine, helix, channel, limit=settings.vod_discovery_limit)
    job_ids = await enqueue_pending(engine, channel)
    stamp = kv_timestamp(utcnow())
    for key in ("job_vod_process_last", "job_vod_discovery_last"):
        await store.set(key, stamp, channel)
        await store.set(key, stamp, "")
    metrics.PROCESSING_CYCLES.labels(channel).inc()
    return {"channel": channel, "discovered": new_ids, "jobs_created": len(job_ids)}


async def catalog_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    engine, store = services.engine, KV(services.engine)
    settings = await services.settings()
    channel = ctx.payload.get("channel")
    if channel is None:
        names = await watched_channels(engine, settings.channels)
        for name in names:
            await ctx.enqueue_next("vod.catalog", {"channel": name}, max_attempts=3,
                                   idempotency_key=f"vod.catalog:{name}:{ctx.payload.get('period_start')}")
        return {"channels": names}
    helix = services.helix()
    if helix is None:
        return {"channel": channel, "skipped": "TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET not set"}
    # /admin/vod/catalog may ask for a one-off limit; periodic runs use the settings.
    max_count = int(ctx.payload.get("max") or settings.vod_catalog_max)
    max_age_days = int(ctx.payload.get("max_age_days") or settings.vod_catalog_max_age_days)
    result = await catalog.backfill_catalog(
        engine, helix, channel, max_count=max_count, max_age_days=max_age_days,
        page_size=settings.vod_catalog_page_size, page_delay=settings.vod_catalog_page_delay.total_seconds())
    job_ids = await enqueue_pending(engine, channel)
    stamp = kv_timestamp(utcnow())
    await store.set("job_vod_catalog_last", stamp, channel)
    await store.set("job_vod_backfill_last", stamp, channel)
    return {"channel": channel, "pages": result.pages, "seen": result.seen, "inserted": len(result.inserted),
            "complete": result.complete, "jobs_created": len(job_ids)}


async def retention_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    store = KV(services.engine)
    settings = await services.settings()
    if not ctx.payload.get("force") and not await _due(store, "job_vod_retention_last", "", settings.retention_interval):
        return {"skipped": "not due"}
    report = await run_housekeeping(services.engine, services.data_dir, settings)
    await store.set("job_vod_retention_last", kv_timestamp(utcnow()))
    return as_result(report)


# ---- /status ------------------------------------------------------------------------------------

async def archive_status(runtime: Runtime) -> dict[str, Any]:
    """vod-tender's /status fields, computed from the vods table and the task queue."""
    settings = archive_settings(runtime.settings)
    settings = apply_overrides(settings, await load_overrides(runtime.engine))  # type: ignore[assignment]
    not_placeholder = vods.c.is_placeholder.is_(False)
    async with runtime.engine.connect() as conn:
        counts = (await conn.execute(select(
            func.count().filter(vods.c.processed.is_(False), vods.c.processing_error.is_(None)),
            func.count().filter(vods.c.processing_error.is_not(None)),
            func.count().filter(vods.c.processed.is_(True)),
        ).where(not_placeholder))).one()
        by_priority = (await conn.execute(
            select(vods.c.priority, func.count()).where(metrics.unprocessed_condition())
            .group_by(vods.c.priority).order_by(vods.c.priority.desc()))).all()
        active = (await conn.execute(select(func.count()).select_from(tasks).where(
            tasks.c.kind == "vod.download", tasks.c.status == states.RUNNING))).scalar_one()
    averages = await runtime.kv.get_many(["avg_download_ms", "avg_upload_ms", "avg_total_ms", "job_vod_process_last"])
    body: dict[str, Any] = {
        "pending": counts[0], "errored": counts[1], "processed": counts[2],
        "queue_by_priority": [{"priority": p, "count": c} for p, c in by_priority],
        "active_downloads": active,
        "max_concurrent_downloads": settings.max_concurrent_downloads,
        "retry_config": {
            "download_max_attempts": settings.download_max_attempts,
            "download_backoff_base": format_duration(settings.download_backoff_base),
            "upload_max_attempts": settings.upload_max_attempts,
            "upload_backoff_base": format_duration(settings.upload_backoff_base),
            "processing_retry_cooldown": format_duration(settings.processing_retry_cooldown),
        },
        "last_process_run": averages.get("job_vod_process_last"),
    }
    if settings.download_rate_limit:
        body["download_rate_limit"] = settings.download_rate_limit
    for key in ("avg_download_ms", "avg_upload_ms", "avg_total_ms"):
        body[key] = int(averages[key]) if key in averages else None
    return body


# ---- registration -------------------------------------------------------------------------------

def register(runtime: Runtime) -> ArchiveServices:
    """Register the archive's task kinds, periodic tasks, /status fields and gauges."""
    settings = archive_settings(runtime.settings)
    services = ArchiveServices(runtime, settings, TokenStore.from_settings(runtime.engine, runtime.settings))
    _SERVICES[runtime.engine] = services

    def bind(handler):
        async def run(ctx: TaskContext) -> Any:
            return await handler(services, ctx)
        return run

    cooldown = settings.processing_retry_cooldown.total_seconds()
    timeout = settings.download_timeout.total_seconds()
    registry = runtime.registry
    registry.register(TaskKind(
        "vod.download", bind(download_task), max_attempts=settings.download_max_attempts,
        backoff_base=settings.download_backoff_base.total_seconds(), backoff_cap=max(cooldown, 1.0),
        # The handler enforces DOWNLOAD_TIMEOUT itself (to record why); this is the backstop.
        timeout=timeout + 120 if timeout else None, concurrency_global=settings.max_concurrent_downloads))
    registry.register(TaskKind(
        "vod.upload", bind(upload_task), max_attempts=settings.upload_max_attempts,
        backoff_base=settings.upload_backoff_base.total_seconds(), backoff_cap=max(cooldown, 1.0)))
    registry.register(TaskKind("vod.discover", bind(discover_task), max_attempts=3, backoff_base=5.0))
    registry.register(TaskKind("vod.catalog", bind(catalog_task), max_attempts=3, backoff_base=30.0,
                               concurrency_global=1))
    registry.register(TaskKind("vod.retention", bind(retention_task), max_attempts=2, concurrency_global=1))
    tick = min(settings.vod_process_interval, timedelta(seconds=30))
    runtime.periodic.extend([
        PeriodicTask("archive.discover", "vod.discover", every=tick),
        PeriodicTask("archive.catalog", "vod.catalog", every=settings.vod_catalog_backfill_interval),
        PeriodicTask("archive.retention", "vod.retention", every=min(settings.retention_interval, timedelta(minutes=5))),
    ])
    runtime.status_providers.append(archive_status)
    runtime.metric_refreshers.append(metrics.refresh_archive_gauges)

    async def close_clients(_runtime: Runtime, stop: asyncio.Event) -> None:
        await stop.wait()
        await services.aclose()

    runtime.services.append(close_clients)
    return services
