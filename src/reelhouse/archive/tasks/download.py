"""The `vod.download` task: one VOD from Twitch (or any yt-dlp URL) to local disk.

Output is `DATA_DIR/<channel>/twitch_<id>.mp4`: one directory per channel, so one channel's
sweeps and retention never touch another's files, and a stable name so a retry or a restarted
worker resumes the `.part` files. The `vods` row is kept truthful for the runbook SQL:
`download_state` is one of pending | downloading | complete | failed | canceled | interrupted
(vod-tender stored raw yt-dlp lines there), progress columns are written at most every 2 s,
`download_retries` counts failed attempts, `processing_error` says what went wrong, and a VOD
that can no longer succeed is `processed` with its error (the runbook's "permanently failed").

On success the `vod.upload` task is enqueued in the same job before this one returns, so the
download slot (MAX_CONCURRENT_DOWNLOADS, enforced at claim time) is free while the upload runs:
vod-tender held its only slot through the whole upload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from reelhouse.archive import metrics
from reelhouse.archive.kinds import ArchiveTask, DownloadState
from reelhouse.archive.live.settle import after_download, before_download
from reelhouse.archive.models import vods
from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.store import VodNotFound, VodStore
from reelhouse.archive.ytdlp import DownloadProgress, DownloadRequest, discard_partial_files
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import CircuitOpenError, LeaseLost, PermanentError, TransientError
from reelhouse.core.telemetry.tracing import span

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.download")

PROGRESS_WRITE_INTERVAL = 2.0  # seconds between progress writes: the database is not a ticker
CANCELLED_MESSAGE = "cancelled by operator"


async def load_vod(store: VodStore, vod_id: str) -> Any:
    try:
        return await store.require(vod_id)
    except VodNotFound:
        raise PermanentError(f"vod {vod_id} is not in the vods table") from None


async def note_last_attempt(store: VodStore, ctx: TaskContext, row: Any, step: str) -> None:
    """Before the last attempt, leave an error on the row if none is there: should this attempt
    be lost with its worker (SIGKILL, OOM), the task ends dead without the handler running again,
    and the row must still say the VOD failed rather than look pending forever."""
    if ctx.attempt >= ctx.task.max_attempts and not row.processing_error:
        await store.update(
            row.twitch_vod_id,
            processing_error=f"{step}: earlier attempts were interrupted (worker lost); last attempt",
        )


class ProgressWriter:
    """yt-dlp reports progress many times a second; the row and the task hear of it at most
    every PROGRESS_WRITE_INTERVAL seconds."""

    def __init__(self, store: VodStore, ctx: TaskContext, twitch_vod_id: str) -> None:
        self.store, self.ctx, self.vod_id = store, ctx, twitch_vod_id
        self._last = 0.0

    async def __call__(self, progress: DownloadProgress) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_WRITE_INTERVAL:
            return
        self._last = now
        await self.store.update(
            self.vod_id,
            download_state=DownloadState.DOWNLOADING,
            download_bytes=progress.downloaded_bytes,
            download_total=progress.total_bytes or 0,
            download_speed=progress.speed,
            download_eta_seconds=progress.eta,
            progress_updated_at=utcnow(),
        )
        await self.ctx.report_progress(
            progress.fraction or 0.0,
            force=True,
            step="download",
            bytes=progress.downloaded_bytes,
            total=progress.total_bytes,
            speed=progress.speed,
            eta=progress.eta,
        )


async def download_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    """One VOD's processing (vod-tender's `processOnce` span, with `download` inside; the upload
    task it enqueues continues the same trace)."""
    with span("processOnce", {"vod.id": str(ctx.payload.get("vod_id"))}):
        return await _download_task(services, ctx)


async def _download_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    store = services.vods
    settings = await services.current_settings()
    vod_id = str(ctx.payload["vod_id"])
    row = await load_vod(store, vod_id)
    channel = row.channel
    if row.processed and row.youtube_url:
        return {"vod_id": vod_id, "skipped": "already processed"}
    allowed, until = await services.breaker.allow(channel)
    current = trace.get_current_span()
    if current.is_recording():  # two extra reads, only when tracing is on
        depth = (await metrics.queue_depth_by_channel(store.engine)).get(channel or "", 0)
        circuit = (await services.breaker.state(channel)).state
        current.set_attributes({**vod_attributes(row), "circuit.state": str(circuit), "queue_depth": depth})
    if not allowed:
        assert until is not None
        raise CircuitOpenError(channel or "default channel", until)
    await note_last_attempt(store, ctx, row, "download")

    if await before_download(services, row):  # mode `live`: the recording is the VOD's file
        row = await load_vod(store, vod_id)
    output = services.files.vod_path(channel, vod_id)
    started_at = utcnow()
    if row.download_state == DownloadState.COMPLETE and row.downloaded_path and Path(row.downloaded_path).is_file():
        # The previous run finished the file but died before enqueueing the upload.
        path, seconds = Path(row.downloaded_path), 0.0
    else:
        with span("download", {**vod_attributes(row), "download.url": settings.vod_url(vod_id)}) as step:
            path, seconds = await _run(services, ctx, settings, row, output)
            step.set_attributes({"download.duration_ms": int(seconds * 1000), "download.path": str(path)})
        size = path.stat().st_size
        async with ctx.fenced("record the finished download") as conn:
            await store.update(
                vod_id,
                conn=conn,
                downloaded_path=str(path),
                download_state=DownloadState.COMPLETE,
                download_bytes=size,
                download_total=size,
                download_speed=None,
                download_eta_seconds=None,
                progress_updated_at=utcnow(),
                processing_error=None,
            )
        before = (await services.breaker.state(channel)).state
        await services.breaker.record_success(channel)
        metrics.breaker_changed(before, await services.breaker.state(channel))
        metrics.DOWNLOADS_SUCCEEDED.labels(channel).inc()
        await after_download(services, vod_id)  # mode `both`: keep the better copy
        path = Path((await load_vod(store, vod_id)).downloaded_path or path)
        metrics.observe_step("download", seconds)
        try:
            await metrics.record_average(services.kv.engine, "avg_download_ms", seconds * 1000, channel)
        except Exception:  # the file is complete: statistics must not cost a re-run
            log.warning("could not record download timing", exc_info=True, extra={"component": "vod_download"})
        log.info(
            "downloaded %s in %.1fs",
            vod_id,
            seconds,
            extra={
                "component": "vod_download",
                "channel": channel,
                "vod_id": vod_id,
                "bytes": size,
                "dl_ms": int(seconds * 1000),
            },
        )
    await ctx.report_progress(1.0, force=True, step="download")
    generation = int(ctx.payload.get("generation", 0))
    await ctx.enqueue_next(
        ArchiveTask.UPLOAD,
        {
            "vod_id": vod_id,
            "channel": channel,
            "generation": generation,
            "processing_started_at": started_at.timestamp(),
        },
        idempotency_key=f"vod.upload:{vod_id}:g{generation}",
        max_attempts=settings.upload_max_attempts,
        priority=row.priority,
    )
    return {"vod_id": vod_id, "path": str(path), "bytes": path.stat().st_size, "seconds": round(seconds, 3)}


def vod_attributes(row: Any) -> dict[str, str]:
    """The span attributes vod-tender's traces carry for a VOD."""
    values = {
        "vod.id": str(row.twitch_vod_id),
        "vod.title": str(row.title or ""),
        "vod.channel": str(row.channel or ""),
    }
    if getattr(row, "date", None) is not None:
        values["vod.date"] = row.date.isoformat()
    return values


def attempt_note(ctx: TaskContext) -> tuple[bool, str]:
    """(last attempt?, the suffix that tells the operator whether it will be retried)."""
    if ctx.attempt >= ctx.task.max_attempts:
        return True, f" (gave up after {ctx.attempt} attempts)"
    return False, f" (attempt {ctx.attempt}/{ctx.task.max_attempts}; will retry)"


async def _run(
    services: ArchiveServices, ctx: TaskContext, settings: ArchiveSettings, row: Any, output: Path
) -> tuple[Path, float]:
    store, vod_id, channel = services.vods, row.twitch_vod_id, row.channel
    await store.update(vod_id, download_state=DownloadState.DOWNLOADING, progress_updated_at=utcnow())
    metrics.DOWNLOADS_STARTED.labels(channel).inc()
    request = DownloadRequest(
        url=settings.vod_url(vod_id),
        output=output,
        rate_limit=settings.download_rate_limit,
        concurrent_fragments=settings.ytdlp_concurrent_fragments,
        max_bytes=settings.download_max_bytes,
        cookies_path=settings.ytdlp_cookies_path,
        extra_args=settings.ytdlp_extra_args,
        verbose=settings.ytdlp_verbose,
        ffmpeg_location=services.media.ffmpeg_path,
        downloader=services.media.ytdlp_downloader,
    )
    timeout = settings.download_timeout.total_seconds() or None
    try:
        try:
            async with asyncio.timeout(timeout):
                result = await services.download(request, ProgressWriter(store, ctx, vod_id))
        except TimeoutError:
            raise TransientError(f"download timed out after {settings.download_timeout} (DOWNLOAD_TIMEOUT)") from None
    except asyncio.CancelledError:
        await asyncio.shield(_record_interruption(store, ctx, vod_id))
        raise
    except LeaseLost:
        raise  # another run owns the task now: its state is not this run's to write
    except PermanentError as exc:
        metrics.DOWNLOADS_FAILED.labels(channel).inc()
        discard_partial_files(output)  # nothing will resume them
        await store.update(
            vod_id,
            download_state=DownloadState.FAILED,
            processed=True,
            processing_error=f"download: {exc.reason}",
            download_retries=vods.c.download_retries + 1,
        )
        log.warning(
            "download of %s failed permanently: %s",
            vod_id,
            exc.reason.splitlines()[0],
            extra={"component": "vod_download", "channel": channel, "vod_id": vod_id},
        )
        raise
    except Exception as exc:
        metrics.DOWNLOADS_FAILED.labels(channel).inc()
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        before = (await services.breaker.state(channel)).state
        state = await services.breaker.record_failure(channel)
        metrics.CIRCUIT_FAILURES.labels(channel).inc()
        metrics.breaker_changed(before, state)
        last, suffix = attempt_note(ctx)
        async with ctx.fenced("record the failed download") as conn:
            await store.update(
                vod_id,
                conn=conn,
                download_state=DownloadState.FAILED if last else DownloadState.INTERRUPTED,
                processed=last,
                processing_error=f"download: {reason}{suffix}",
                download_retries=vods.c.download_retries + 1,
            )
        raise TransientError(reason) from None
    return result.path, result.seconds


async def _record_interruption(store: VodStore, ctx: TaskContext, vod_id: str) -> None:
    if await store.cancel_requested(ctx.task.id):
        await store.update(
            vod_id,
            download_state=DownloadState.CANCELED,
            processing_error=CANCELLED_MESSAGE,
            download_speed=None,
            download_eta_seconds=None,
        )
    else:
        # Shutdown or lost lease: the task goes back to the queue and resumes the .part files.
        await store.update(
            vod_id, download_state=DownloadState.INTERRUPTED, download_speed=None, download_eta_seconds=None
        )
