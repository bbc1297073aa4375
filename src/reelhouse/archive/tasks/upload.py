"""The `vod.upload` task: a downloaded VOD to YouTube, exactly once.

- Never two videos for one VOD: a row with `youtube_url` is done; the task's idempotency key
  is per VOD and job generation; the resumable session URI is stored in `vods.youtube_upload_uri`
  before the first media byte is sent, and a later attempt (another worker, after a SIGKILL)
  resumes that session from the server's offset instead of creating a new video.
- Quotas: at most UPLOAD_DAILY_LIMIT uploads per channel in any 24 h, and at most
  BACKFILL_UPLOAD_DAILY_LIMIT of them back-catalog (older than RETAIN_KEEP_NEWER_THAN_DAYS),
  counted from `uploaded_at` (vod-tender counted `updated_at`, which any edit touches). Over the
  limit, and on YouTube's quotaExceeded, the task waits (RateLimitedError) until the window
  frees or the quota resets at midnight Pacific, without spending an attempt.
- Title and description come from templates and are made acceptable to YouTube (no `<`/`>`,
  title <= 100 characters, description <= 5000 bytes) instead of being rejected after upload.
- After a confirmed upload with BACKFILL_AUTOCLEAN on, the local file is deleted and
  `downloaded_path` cleared; a transcoded copy (TRANSCODE_BEFORE_UPLOAD) is always deleted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from reelhouse.archive import metrics
from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.tasks.download import attempt_note, load_vod, note_last_attempt, vod_attributes
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import LeaseLost, PermanentError, RateLimitedError, TransientError
from reelhouse.core.providers.errors import RateLimited, Rejected
from reelhouse.core.providers.youtube import UploadSessionExpired, VideoMetadata, YouTubeClient
from reelhouse.core.telemetry.tracing import span

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.upload")

TITLE_MAX_CHARS = 100
DESCRIPTION_MAX_BYTES = 5000
AUTHORIZATION_RECHECK = timedelta(minutes=10)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def youtube_url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


def template_fields(settings: ArchiveSettings, row: Any) -> dict[str, str]:
    when = (row.date or row.created_at).astimezone(UTC)
    return {
        "date": when.strftime("%Y-%m-%d"),
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": (row.title or "").strip(),
        "channel": row.channel or "twitch",
        "vod_id": row.twitch_vod_id,
        "url": settings.vod_url(row.twitch_vod_id),
        "description": (row.description or "").strip(),
    }


def clean_title(text: str) -> str:
    title = " ".join(_CONTROL.sub(" ", text).replace("<", "‹").replace(">", "›").split())
    if not title:
        return "Twitch VOD"
    return title if len(title) <= TITLE_MAX_CHARS else title[: TITLE_MAX_CHARS - 3].rstrip() + "..."


def clean_description(text: str) -> str:
    description = _CONTROL.sub("", text).replace("<", "‹").replace(">", "›").strip()
    raw = description.encode("utf-8")
    if len(raw) <= DESCRIPTION_MAX_BYTES:
        return description
    # Cut at a character boundary, leaving room for the ellipsis.
    return raw[: DESCRIPTION_MAX_BYTES - 3].decode("utf-8", errors="ignore").rstrip() + "..."


def video_metadata(settings: ArchiveSettings, row: Any) -> VideoMetadata:
    fields = template_fields(settings, row)
    return VideoMetadata(
        title=clean_title(settings.youtube_title_template.format(**fields)),
        description=clean_description(settings.youtube_description_template.format(**fields)),
        privacy_status=settings.youtube_privacy,
    )


async def check_daily_limits(services: ArchiveServices, settings: ArchiveSettings, row: Any) -> None:
    """Raise RateLimitedError when this upload would exceed a rolling 24 h cap (0 = no cap)."""
    now = utcnow()
    recent = await services.vods.uploads_since(row.channel, now - timedelta(hours=24))
    checks = [(settings.upload_daily_limit, [r.uploaded_at for r in recent], "UPLOAD_DAILY_LIMIT")]
    if settings.is_back_catalog(row.date, now):
        backlog = [r.uploaded_at for r in recent if settings.is_back_catalog(r.date, now)]
        checks.append((settings.backfill_upload_daily_limit, backlog, "BACKFILL_UPLOAD_DAILY_LIMIT"))
    for limit, times, name in checks:
        if limit > 0 and len(times) >= limit:
            # The window frees when enough of the counted uploads are older than 24 h.
            frees_at = times[len(times) - limit] + timedelta(hours=24, seconds=1)
            raise RateLimitedError(f"{name} ({limit} per 24 h) reached for channel {row.channel!r}", frees_at)


async def upload_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    store, files = services.vods, services.files
    settings = await services.current_settings()
    vod_id = str(ctx.payload["vod_id"])
    row = await load_vod(store, vod_id)
    channel = row.channel
    if row.youtube_url:
        # Done before (maybe by an attempt that died right after saving the URL): finish the
        # bookkeeping that attempt may have missed, never upload again.
        values: dict[str, Any] = {"processed": True, "processing_error": None}
        if row.downloaded_path and files.clean_after_upload(settings, row.downloaded_path):
            values["downloaded_path"] = None
        await store.update(vod_id, **values)
        return {"vod_id": vod_id, "youtube_url": row.youtube_url, "skipped": "already uploaded"}
    if not settings.youtube_upload_enabled or row.skip_upload:
        reason = "skip_upload set" if row.skip_upload else "YOUTUBE_UPLOAD_ENABLED is off"
        await store.update(vod_id, processed=True, processing_error=None)
        await _observe_total(services, ctx, channel)
        return {"vod_id": vod_id, "skipped": reason, "path": row.downloaded_path}
    await note_last_attempt(store, ctx, row, "upload")
    if not row.downloaded_path or not Path(row.downloaded_path).is_file():
        await _fail_permanently(services, row, "local file is missing; reprocess the VOD to download it again")
    client = await services.youtube.client(channel)
    if client is None:
        await store.update(
            vod_id,
            processing_error="upload: waiting for YouTube authorization "
            "(set YT_CLIENT_ID/YT_CLIENT_SECRET and run /auth/youtube)",
        )
        raise RateLimitedError("YouTube is not authorized", utcnow() + AUTHORIZATION_RECHECK)
    if row.youtube_upload_uri is None:
        await check_daily_limits(services, settings, row)  # a started session already holds its slot

    started = time.monotonic()
    try:
        with span("upload", {**vod_attributes(row), "upload.path": row.downloaded_path}) as step:
            async with client:
                video_id = await _send(services, ctx, settings, row, client)
            step.set_attributes(
                {
                    "upload.duration_ms": int((time.monotonic() - started) * 1000),
                    "upload.youtube_url": youtube_url(video_id),
                }
            )
    except RateLimited as exc:
        log.info(
            "upload of %s waits until %s: %s",
            vod_id,
            exc.retry_at.isoformat(),
            exc.reason,
            extra={"component": "vod_upload", "channel": channel, "vod_id": vod_id},
        )
        raise
    except asyncio.CancelledError:
        if await asyncio.shield(store.cancel_requested(ctx.task.id)):
            await asyncio.shield(store.update(vod_id, processing_error="cancelled by operator"))
        raise
    except LeaseLost:
        raise  # another run owns the task now
    except Rejected as exc:
        metrics.UPLOADS_FAILED.labels(channel).inc()
        await _fail_permanently(services, row, exc.reason)
    except Exception as exc:
        metrics.UPLOADS_FAILED.labels(channel).inc()
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        last, suffix = attempt_note(ctx)
        await store.update(vod_id, processed=last, processing_error=f"upload: {reason}{suffix}")
        raise TransientError(reason) from None

    seconds = time.monotonic() - started
    url = youtube_url(video_id)
    # Not fenced: the video exists on YouTube, so its URL is recorded whichever run got it.
    await store.update(
        vod_id, youtube_url=url, uploaded_at=utcnow(), processed=True, processing_error=None, youtube_upload_uri=None
    )
    metrics.UPLOADS_SUCCEEDED.labels(channel).inc()
    metrics.observe_step("upload", seconds)
    total = 0.0
    try:
        await metrics.record_average(services.kv.engine, "avg_upload_ms", seconds * 1000, channel)
        total = await _observe_total(services, ctx, channel)
    except Exception:  # the video exists: a statistics hiccup must not fail (and retry) the task
        log.warning("could not record upload timings", exc_info=True, extra={"component": "vod_upload"})
    cleaned = files.clean_after_upload(settings, row.downloaded_path)
    if cleaned:
        await store.update(vod_id, downloaded_path=None)
    log.info(
        "uploaded %s as %s in %.1fs",
        vod_id,
        url,
        seconds,
        extra={
            "component": "vod_upload",
            "channel": channel,
            "vod_id": vod_id,
            "youtube_url": url,
            "upl_ms": int(seconds * 1000),
            "total_ms": int(total * 1000),
        },
    )
    return {"vod_id": vod_id, "youtube_url": url, "seconds": round(seconds, 3), "local_file_deleted": cleaned}


async def media_for_upload(services: ArchiveServices, settings: ArchiveSettings, row: Any) -> Path:
    """The file to upload: the download, or its TRANSCODE_BEFORE_UPLOAD encode. The encode is
    kept until the upload is confirmed, so a resumed session sends the same bytes."""
    source = Path(row.downloaded_path)
    profile_name = settings.transcode_profile
    if profile_name is None or services.transcode is None:
        return source
    target = services.files.transcoded_path(source)
    if not target.is_file():  # the transcoder moves its output into place only when complete
        await services.transcode(source, target, profile_name)
    return target


async def _send(
    services: ArchiveServices, ctx: TaskContext, settings: ArchiveSettings, row: Any, client: YouTubeClient
) -> str:
    """Upload into the saved session, or into a new one saved before the first media byte."""
    store, vod_id = services.vods, row.twitch_vod_id
    media = await media_for_upload(services, settings, row)
    size = media.stat().st_size
    progress = _UploadProgress(ctx)
    uri = row.youtube_upload_uri
    for _ in range(2):
        if uri is None:
            uri = await client.start_session(video_metadata(settings, row), size=size)
            # Before any media byte, and only while this run holds the task: a stale run must
            # not replace the session the current run is sending into.
            async with ctx.fenced("save the upload session") as conn:
                await store.update(vod_id, conn=conn, youtube_upload_uri=uri)
        try:
            video_id = await client.upload(uri, media, on_progress=progress, chunk_size=settings.upload_chunk_bytes)
            break
        except UploadSessionExpired:
            # The expired session never produced a video: a new one cannot duplicate it.
            log.warning(
                "upload session of %s expired; starting a new one",
                vod_id,
                extra={"component": "vod_upload", "channel": row.channel, "vod_id": vod_id},
            )
            uri = None
            await store.update(vod_id, youtube_upload_uri=None)
    else:
        raise TransientError("upload session expired twice")
    return video_id


async def _fail_permanently(services: ArchiveServices, row: Any, reason: str) -> NoReturn:
    await services.vods.update(row.twitch_vod_id, processed=True, processing_error=f"upload: {reason}")
    log.warning(
        "upload of %s failed permanently: %s",
        row.twitch_vod_id,
        reason,
        extra={"component": "vod_upload", "channel": row.channel, "vod_id": row.twitch_vod_id},
    )
    raise PermanentError(reason)


async def _observe_total(services: ArchiveServices, ctx: TaskContext, channel: str) -> float:
    started = ctx.payload.get("processing_started_at")
    if started is None:
        return 0.0
    total = max(0.0, datetime.now(UTC).timestamp() - float(started))
    metrics.observe_step("total", total)
    await metrics.record_average(services.kv.engine, "avg_total_ms", total * 1000, channel)
    return total


class _UploadProgress:
    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx

    async def __call__(self, committed: int, total: int) -> None:
        await self.ctx.report_progress(committed / total if total else 0.0, step="upload", bytes=committed, total=total)
