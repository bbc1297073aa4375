"""The `vod.live_record` task: record a watched channel's live stream while it is live.

Started when a channel whose `record_mode` is `live` or `both` goes live, as Helix's `streams`
shows it: by chat auto mode (chat/auto.py) when chat is recorded, else by the live watch
(watch.py, the same poller without chat), so live recording does not depend on chat. One task
per stream, keyed by the stream's chat placeholder, so a restart that
sees the stream again finds the same task. The run reads the live HLS (reader.py) and writes
every content segment through the storage layer as it completes
(`live/<channel>/<placeholder>/<index>.ts`), recording its position in `live_recordings` in
the same step; a run that dies (SIGKILL, lost lease) is retried by the engine and the next run
continues after the last stored segment, so a crash loses at most the segment being read, and
none while the restart is shorter than the playlist window. The worker's heartbeat keeps the
lease; the run reports progress (segments, seconds) as it goes.

When the stream ends, the segments are joined into one MP4 (ffmpeg's concat demuxer, stream
copy: each segment's timestamps are placed after the previous one, so discontinuities from
ad breaks and encoder restarts become a continuous timeline), the segments are deleted, and
the copy is settled (settle.py) once reconciliation has linked the real VOD. Cancelling the
task stops the recording; its segments are kept for an operator.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelhouse.archive.chat.auto import LiveStart
from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.live import metrics
from reelhouse.archive.live.playlist import Segment
from reelhouse.archive.live.reader import LiveReader, Position
from reelhouse.archive.live.settle import settle_recording
from reelhouse.archive.store.live import LIVE_MODES, LiveState
from reelhouse.archive.twitch.playback import TwitchPlayback
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.media.probe import probe_media
from reelhouse.core.media.process import run_tool
from reelhouse.core.providers.errors import NotFound, Rejected

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.live")

TASK_KIND = ArchiveTask.LIVE_RECORD


def segment_prefix(channel: str, placeholder: str) -> str:
    return f"live/{channel or '_default'}/{placeholder}/"


def live_trigger(services: ArchiveServices) -> Callable[[LiveStart], Awaitable[None]]:
    """Auto mode or the live watch calls this when a channel goes live (and again after a restart)."""

    async def on_live(start: LiveStart) -> None:
        mode = await services.live.record_mode(start.channel)
        if mode not in LIVE_MODES:
            return
        await services.live.open(
            channel=start.channel,
            placeholder=start.placeholder,
            started_at=start.started_at,
            stream_id=start.stream_id,
            mode=mode,
        )
        enqueued = await services.queue.enqueue(
            TASK_KIND,
            {"placeholder": start.placeholder, "channel": start.channel},
            max_attempts=services.live_settings.max_attempts,
            priority=100,  # a live stream cannot wait behind the download backlog
            idempotency_key=f"{TASK_KIND}:{start.placeholder}",
        )
        if enqueued.created:
            metrics.RECORDINGS_STARTED.labels(start.channel).inc()
            log.info(
                "#%s is live; recording it as %s (mode %s)",
                start.channel,
                start.placeholder,
                mode,
                extra={"component": "live", "channel": start.channel, "vod_id": start.placeholder},
            )

    return on_live


async def live_record_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    placeholder = str(ctx.payload.get("placeholder", ""))
    row = await services.live.get(placeholder)
    if row is None:
        raise PermanentError(f"no live recording {placeholder[:80]!r}")
    if row.state not in (LiveState.RECORDING, LiveState.ENDED):
        # Finished by an earlier run whose acknowledgement was lost.
        await settle_recording(services, placeholder)
        return {"placeholder": placeholder, "state": row.state}
    channel = row.channel
    settings = services.live_settings
    storage = services.storage()
    prefix = segment_prefix(channel, placeholder)
    position = Position(
        program_date=datetime.fromisoformat(row.last_program_date) if row.last_program_date else None,
        sequence=row.last_sequence,
        elapsed=row.first_elapsed,
        broadcast_id=row.broadcast_id,
    )
    stored = {"segments": int(row.segments), "seconds": float(row.recorded_seconds)}
    if stored["segments"]:
        metrics.RESUMES.labels(channel).inc()
        log.info(
            "continuing the recording of %s after %d segments",
            placeholder,
            stored["segments"],
            extra={"component": "live", "channel": channel},
        )
    counts = {"ad": 0, "lost": 0, "discontinuity": 0}

    def on_event(name: str, count: int) -> None:
        if name == "ad":
            metrics.AD_SEGMENTS.labels(channel).inc(count)
        elif name == "lost":
            metrics.LOST_SEGMENTS.labels(channel).inc(count)
        elif name == "discontinuity":
            metrics.DISCONTINUITIES.labels(channel).inc(count)
        if name in counts:
            counts[name] += count

    async def sink(segment: Segment, data: bytes, at: Position) -> None:
        index = stored["segments"]
        extension = "mp4" if segment.map_uri else "ts"
        await storage.put(f"{prefix}{index:08d}.{extension}", data)
        async with ctx.fenced("record a live segment") as conn:
            await services.live.update(
                placeholder,
                conn=conn,
                segments=index + 1,
                recorded_seconds=stored["seconds"] + segment.duration,
                last_sequence=at.sequence,
                broadcast_id=at.broadcast_id,
                last_program_date=at.program_date.isoformat() if at.program_date else None,
                ad_segments=row.ad_segments + counts["ad"],
                lost_segments=row.lost_segments + counts["lost"],
                discontinuities=row.discontinuities + counts["discontinuity"],
                **({"first_elapsed": at.elapsed} if index == 0 else {}),
            )
        stored["segments"] = index + 1
        stored["seconds"] += segment.duration
        metrics.SEGMENTS.labels(channel).inc()
        metrics.SEGMENT_BYTES.labels(channel).inc(len(data))
        await ctx.report_progress(
            0.0, step="live", segments=stored["segments"], seconds=round(stored["seconds"], 3), ads=counts["ad"]
        )

    playback = TwitchPlayback(
        gql_url=settings.gql_url,
        usher_base=settings.usher_base,
        client_id=settings.gql_client_id,
        oauth_token=settings.oauth_token,
        player_type=settings.player_type,
    )
    reader = LiveReader(
        playback,
        channel,
        quality=settings.quality,
        end_grace=settings.end_grace.total_seconds(),
        stall_timeout=settings.stall_timeout.total_seconds(),
        segment_max_bytes=settings.segment_max_bytes,
        on_event=on_event,
    )
    try:
        if row.state == LiveState.RECORDING:
            await reader.run(position, sink)
    except asyncio.CancelledError:
        if await services.vods.cancel_requested(ctx.task.id):
            await asyncio.shield(
                services.live.update(placeholder, state=LiveState.CANCELLED, error="cancelled by operator")
            )
        raise  # a shutdown or a lost lease: the next run continues from the stored segments
    except NotFound as exc:
        await _fail(services, placeholder, channel, f"live recording: {exc.reason}")
        raise PermanentError(exc.reason) from None
    except Rejected as exc:
        raise TransientError(f"live recording: {exc.reason}") from None
    finally:
        await playback.aclose()
    async with ctx.fenced("record the stream's end") as conn:
        await services.live.update(
            placeholder,
            conn=conn,
            state=LiveState.ENDED,
            ad_segments=row.ad_segments + counts["ad"],
            lost_segments=row.lost_segments + counts["lost"],
            discontinuities=row.discontinuities + counts["discontinuity"],
        )
    if not stored["segments"]:
        await _fail(services, placeholder, channel, "the stream ended before a segment was recorded")
        return {"placeholder": placeholder, "segments": 0}
    path = await finalize(services, channel, placeholder)
    info = await probe_media(path, settings=services.media)
    async with ctx.fenced("record the finished recording") as conn:
        await services.live.update(
            placeholder, conn=conn, state=LiveState.FINISHED, path=str(path), duration_seconds=info.duration, error=None
        )
    await _delete_segments(services, prefix)
    metrics.RECORDINGS_FINISHED.labels(channel, "finished").inc()
    log.info(
        "recorded %s: %d segments, %.1fs",
        placeholder,
        stored["segments"],
        info.duration or 0.0,
        extra={"component": "live", "channel": channel, "vod_id": placeholder},
    )
    await settle_recording(services, placeholder)
    return {
        "placeholder": placeholder,
        "segments": stored["segments"],
        "duration": info.duration,
        "ads_skipped": row.ad_segments + counts["ad"],
        "lost": row.lost_segments + counts["lost"],
        "path": str(path),
    }


async def _fail(services: ArchiveServices, placeholder: str, channel: str, reason: str) -> None:
    await services.live.update(placeholder, state=LiveState.FAILED, error=reason[:2000])
    metrics.RECORDINGS_FINISHED.labels(channel, "failed").inc()


async def finalize(services: ArchiveServices, channel: str, placeholder: str) -> Path:
    """Join the stored segments into `DATA_DIR/<channel>/live_<placeholder>.mp4`."""
    storage = services.storage()
    keys = sorted([info.key async for info in storage.list(segment_prefix(channel, placeholder))])
    if not keys:
        raise PermanentError(f"no stored segments for {placeholder}")
    target = services.files.live_path(channel, placeholder)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="live-", dir=target.parent) as work:
        folder = Path(work)
        lines = []
        for n, key in enumerate(keys):
            local = folder / f"{n:08d}{Path(key).suffix}"
            with local.open("wb") as out:
                async for chunk in storage.get(key):
                    out.write(chunk)
            lines.append(f"file '{local.name}'")
        (folder / "list.txt").write_text("\n".join(lines) + "\n")
        partial = folder / "joined.mp4"
        result = await run_tool(
            [
                services.media.ffmpeg_path,
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
                str(folder / "list.txt"),
                "-map",
                "0",
                "-c",
                "copy",
                "-movflags",
                "+faststart",
                "-y",
                str(partial),
            ]
        )
        if result.returncode != 0:
            raise TransientError(f"joining the live segments failed: {result.stderr_text[-500:]}")
        partial.replace(target)
    return target


async def _delete_segments(services: ArchiveServices, prefix: str) -> None:
    storage = services.storage()
    keys = [info.key async for info in storage.list(prefix)]
    for key in keys:
        await storage.delete(key)
