"""What becomes of a finished live recording once its VOD is known.

Reconciliation (chat/reconcile.py) links the recording to the real VOD id; the VOD's download
task finds it too (linked, or the channel's recording that started within
CHAT_RECONCILE_MATCH_WINDOW of the VOD's creation), so the order in which the stream ends,
the recording is joined, the VOD is reconciled and its download task runs does not matter:
- `live`: the recording is the VOD's file (moved to `DATA_DIR/<channel>/twitch_<id>.mp4`,
  `download_state=complete`); the download task then goes straight to the upload. Without a
  usable recording (failed, cancelled) the VOD is downloaded as usual.
- `both`: the VOD is downloaded too, after the recording has finished; the better copy is kept
  (`better_copy`), the other deleted.
- A download waits (without spending attempts) while the recording of its stream runs.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from reelhouse.archive.kinds import DownloadState
from reelhouse.archive.live import metrics
from reelhouse.archive.models import live_recordings
from reelhouse.archive.store.live import LiveState
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import RateLimitedError
from reelhouse.core.media.probe import MediaInfo, probe_media

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.live")

SETTLING = "settling"


def _pixels(info: MediaInfo) -> int:
    video = info.video
    return (video.width or 0) * (video.height or 0) if video is not None else 0


def better_copy(live: MediaInfo, vod: MediaInfo, tolerance: timedelta) -> str:
    """ "live" or "vod": the longer copy (by more than `tolerance`: a recording that lost
    segments or started late, a VOD cut short or deleted in part), then the larger picture;
    equal copies keep the VOD (Twitch's own archive, no stitched-ad gaps)."""
    live_seconds, vod_seconds = live.duration or 0.0, vod.duration or 0.0
    if abs(live_seconds - vod_seconds) > tolerance.total_seconds():
        return "live" if live_seconds > vod_seconds else "vod"
    if _pixels(live) != _pixels(vod):
        return "live" if _pixels(live) > _pixels(vod) else "vod"
    return "vod"


def _downloaded(vod: Any) -> Path | None:
    if vod.download_state == DownloadState.COMPLETE and vod.downloaded_path and Path(vod.downloaded_path).is_file():
        return Path(vod.downloaded_path)
    return None


async def _claim(services: ArchiveServices, placeholder: str) -> bool:
    """One settler at a time (reconciliation, the recording and the download may all try)."""
    async with services.live.engine.begin() as conn:
        result = await conn.execute(
            update(live_recordings)
            .where(live_recordings.c.placeholder == placeholder, live_recordings.c.state == LiveState.FINISHED)
            .values(state=SETTLING, updated_at=utcnow())
        )
    return bool(result.rowcount)


async def settle_recording(services: ArchiveServices, placeholder: str) -> str | None:
    """Adopt or compare a finished, linked recording; the copy kept ("live"/"vod"), or None
    when there is nothing to do yet."""
    rec = await services.live.get(placeholder)
    if rec is None or rec.state != LiveState.FINISHED or rec.vod_id is None:
        return None
    vod = await services.vods.get(rec.vod_id)
    if vod is None or vod.is_placeholder:
        return None
    downloaded = _downloaded(vod)
    if rec.mode == "both" and downloaded is None:
        return None  # the download settles after it
    if not await _claim(services, placeholder):
        return None
    try:
        kept = await _settle(services, rec, vod, downloaded)
    except BaseException:
        await services.live.update(placeholder, state=LiveState.FINISHED)
        raise
    metrics.KEPT.labels(rec.channel, kept).inc()
    return kept


async def _settle(services: ArchiveServices, rec: Any, vod: Any, downloaded: Path | None) -> str:
    recording = Path(rec.path or "")
    if not recording.is_file():
        await services.live.update(rec.placeholder, state=LiveState.FAILED, error="the recorded file is gone")
        return "vod"
    target = services.files.vod_path(vod.channel, vod.twitch_vod_id)
    kept = "live"
    if downloaded is not None:
        live_info = await probe_media(recording, settings=services.media)
        vod_info = await probe_media(downloaded, settings=services.media)
        kept = better_copy(live_info, vod_info, services.live_settings.compare_tolerance)
        log.info(
            "%s: live copy %.1fs %dpx, VOD %.1fs %dpx; keeping the %s copy",
            vod.twitch_vod_id,
            live_info.duration or 0.0,
            _pixels(live_info),
            vod_info.duration or 0.0,
            _pixels(vod_info),
            kept,
            extra={"component": "live", "channel": vod.channel, "vod_id": vod.twitch_vod_id},
        )
    if kept == "vod":
        recording.unlink(missing_ok=True)
        await services.live.update(rec.placeholder, state=LiveState.DISCARDED, path=None)
        return kept
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(recording, target)
    if downloaded is not None and downloaded != target:
        downloaded.unlink(missing_ok=True)
    size = target.stat().st_size
    await services.vods.update(
        vod.twitch_vod_id,
        downloaded_path=str(target),
        download_state=DownloadState.COMPLETE,
        download_bytes=size,
        download_total=size,
        download_speed=None,
        download_eta_seconds=None,
        progress_updated_at=utcnow(),
        processing_error=None,
    )
    await services.live.update(rec.placeholder, state=LiveState.KEPT, path=str(target))
    return kept


async def before_download(services: ArchiveServices, vod: Any) -> bool:
    """Called by `vod.download` first: True when the VOD's file is now the live recording
    (mode `live`); waits (RateLimitedError: no attempt spent) while its stream is recorded."""
    window = services.chat_settings.reconcile_match_window
    rec = await services.live.for_vod(vod.twitch_vod_id, vod.channel, vod.date, window)
    if rec is None:
        return False
    if rec.vod_id is None:
        await services.live.link_vod(rec.placeholder, vod.twitch_vod_id)
    if rec.state in (LiveState.RECORDING, LiveState.ENDED, SETTLING):
        retry_at = utcnow() + services.live_settings.settle_retry
        raise RateLimitedError(f"the live recording {rec.placeholder} of this stream is still running", retry_at)
    if rec.state == LiveState.FINISHED and rec.mode == "live":
        return await settle_recording(services, rec.placeholder) == "live"
    if rec.state == LiveState.KEPT and rec.path and vod.downloaded_path == rec.path and Path(rec.path).is_file():
        # Adopted before this job existed (a new job marks the VOD pending): still its file.
        await services.vods.update(vod.twitch_vod_id, download_state=DownloadState.COMPLETE)
        return True
    return False


async def after_download(services: ArchiveServices, vod_id: str) -> None:
    """Mode `both`: the download finished; compare it with the recording."""
    rec = await services.live.for_vod(vod_id, "", None, timedelta(0))
    if rec is not None and rec.mode == "both":
        await settle_recording(services, rec.placeholder)
