"""`live.transcode`: one ffmpeg decodes the ingest once and encodes the stream profile's ladder
(short segments); completed segments go to storage as they appear. (The recording is nginx's:
see ingest.py and http/ingest.py.)

The task runs as long as the stream is live. When its worker dies, the lease runs out, another
worker claims it and continues the same playlists with a discontinuity (hls.py). When the
publisher stops, ffmpeg's input ends, the playlists get their ENDLIST and `live.finalize` is
enqueued in the same job.

With LIVE_LL_HLS, ffmpeg's HLS segments are LL-HLS parts (a key frame every part, so each
part decodes alone) that hls.py groups into the parent segments.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.media.ladder import FALLBACK_FPS, gop_frames
from reelhouse.core.media.probe import MediaInfo
from reelhouse.core.media.profiles import Rendition, builtin_profile, plan_ladder
from reelhouse.live.hls import LocalOutput, Track, master_playlist
from reelhouse.live.kinds import KIND_FINALIZE
from reelhouse.live.services import LiveServices
from reelhouse.live.store import StreamNotFound
from reelhouse.live.tasks.process import LiveProcess, probe_live

log = logging.getLogger("reelhouse.live.transcode")
SYNC_INTERVAL = 0.2
LIVE_CHECK_INTERVAL = 2.0


def _fps(info: MediaInfo) -> float:
    # As gop_frames: an absurd reported rate (90000/1 in MPEG-TS) is no rate.
    return info.video.fps if info.video and info.video.fps and info.video.fps <= 240 else FALLBACK_FPS


def part_frames(info: MediaInfo, part_seconds: float) -> int:
    """Frames of an LL-HLS part: the GOP, so every part starts with a key frame."""
    return max(1, math.ceil(_fps(info) * part_seconds - 1e-6))


def part_layout(info: MediaInfo, settings: Any) -> tuple[int, float | None]:
    """(parts per segment, the part target) of LL-HLS; (0, None) without it. ffmpeg cuts at the
    first key frame at or after each multiple of the part length, so a part is at most
    `part_frames` frames long."""
    if not settings.ll_hls:
        return 0, None
    per_segment = max(1, round(settings.segment_seconds / settings.part_seconds))
    return per_segment, round(part_frames(info, settings.part_seconds) / _fps(info), 3)


def ladder_args(
    source: str, work: Path, rungs: list[Rendition], info: MediaInfo, settings: Any, timeout_us: int
) -> list[str]:
    seconds = settings.segment_seconds
    has_audio = info.audio is not None
    gop = gop_frames(info, seconds)
    if settings.ll_hls:  # ffmpeg's segments are the parts
        seconds = settings.part_seconds
        gop = part_frames(info, seconds)
    args = ["-rw_timeout", str(timeout_us), "-fflags", "+genpts", "-analyzeduration", "1000000", "-i", source]
    if len(rungs) == 1:
        graph = f"[0:v]scale={rungs[0].width}:{rungs[0].height},format=yuv420p[v0]"
    else:
        graph = f"[0:v]split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs)))
        graph += "".join(f";[s{i}]scale={r.width}:{r.height},format=yuv420p[v{i}]" for i, r in enumerate(rungs))
    args += ["-filter_complex", graph]
    for i in range(len(rungs)):
        args += ["-map", f"[v{i}]"] + (["-map", "0:a:0"] if has_audio else [])
    for i, rung in enumerate(rungs):
        rate = rung.video_bitrate
        args += [
            f"-c:v:{i}", "libx264", f"-preset:v:{i}", rung.preset, f"-b:v:{i}", str(rate),
            f"-maxrate:v:{i}", str(rung.maxrate or int(rate * 1.1)), f"-bufsize:v:{i}", str(rung.bufsize or rate * 2),
        ]  # fmt: skip
        if has_audio:
            args += [f"-c:a:{i}", "aac", f"-b:a:{i}", str(rung.audio_bitrate), f"-ac:a:{i}", "2"]
    args += ["-tune", "zerolatency", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{seconds})"]
    stream_map = " ".join(f"v:{i}" + (f",a:{i}" if has_audio else "") + f",name:{r.name}" for i, r in enumerate(rungs))
    args += [
        "-f", "hls", "-hls_time", f"{seconds:g}", "-hls_list_size", "20",
        "-hls_flags", "independent_segments+delete_segments+temp_file", "-hls_delete_threshold", "10",
        "-hls_segment_type", "mpegts", "-hls_segment_filename", str(work / "%v" / "seg_%06d.ts"),
        "-var_stream_map", stream_map, str(work / "%v" / "index.m3u8"),
    ]  # fmt: skip
    return args


async def _still_live(services: LiveServices, stream_id: int, session: int) -> bool:
    try:
        stream = await services.store.get_stream(stream_id)
    except StreamNotFound:
        return False
    return bool(stream["is_live"]) and stream["session"] == session


async def transcode(services: LiveServices, ctx: TaskContext) -> dict[str, Any]:
    stream_id, session = int(ctx.payload["stream_id"]), int(ctx.payload["session"])
    try:
        stream = await services.store.get_stream(stream_id)
    except StreamNotFound:
        raise PermanentError(f"stream {stream_id} was deleted") from None
    settings = services.settings
    storage = services.storage()
    if stream["is_live"] and stream["session"] == session:
        await _run_live(services, ctx, stream, session)
    # Ended (or this run started after the end): close the playlists and hand over to finalize.
    for folder in await _track_folders(services, stream_id, session):
        track = await Track.load(storage, folder, settings.window_segments)
        if (track.segments or track.pending) and not track.ended:
            await ctx.check_lease("end playlist")
            doomed = await track.seal_pending(storage)  # a run died mid-segment
            track.end()
            await track.save(storage)
            services.signals.notify(folder)
            for key in doomed:
                await storage.delete(key)
    await ctx.enqueue_next(
        KIND_FINALIZE,
        {"stream_id": stream_id, "session": session},
        idempotency_key=f"live:{stream_id}:{session}:finalize",
    )
    return {"stream_id": stream_id, "session": session}


async def _track_folders(services: LiveServices, stream_id: int, session: int) -> list[str]:
    storage = services.storage()
    folders: list[str] = []
    prefix = services.hls_folder(stream_id) + "/"
    seen = set()
    async for info in storage.list(prefix):
        rest = info.key[len(prefix) :]
        if rest.endswith("/state.json") and rest.count("/") == 1:
            seen.add(prefix + rest.split("/", 1)[0])
    return folders + sorted(seen)


async def _run_live(services: LiveServices, ctx: TaskContext, stream: dict[str, Any], session: int) -> None:
    settings = services.settings
    media = services.runtime_settings.media
    storage = services.storage()
    stream_id = int(stream["id"])
    timeout_us = int(settings.input_timeout.total_seconds() * 1e6)
    source = settings.ingest_url(stream["playback_id"])
    try:
        profile = builtin_profile(stream["profile"])
    except LookupError as exc:
        raise PermanentError(str(exc)) from None
    info = await probe_live(media.ffprobe_path, source, timeout_us)
    if info.video is None:
        raise PermanentError("the published stream has no video")
    rungs = plan_ladder(profile, info)
    async with services.scratch(f"live-{stream_id}") as work:
        for rung in rungs:
            (work / rung.name).mkdir()
        hls = services.hls_folder(stream_id)
        # The task id too: a replacement task (monitor.py) starts its fences at 1 again.
        name_prefix = f"s{session}t{ctx.task.id}f{ctx.fence}-"
        parts_per_segment, part_target = part_layout(info, settings)
        outputs = [
            LocalOutput(
                work / r.name, await Track.load(storage, f"{hls}/{r.name}", settings.window_segments), name_prefix,
                parts_per_segment=parts_per_segment, part_target=part_target, on_saved=services.signals.notify,
            )
            for r in rungs
        ]  # fmt: skip
        await ctx.check_lease("prepare playlists")
        for output in outputs:
            output.siblings = [other for other in outputs if other is not output]
            await output.prepare(storage)
        variants = [(r.name, r.video_bitrate + r.audio_bitrate, r.width, r.height) for r in rungs]
        await ctx.check_lease("write master playlist")
        await storage.put(f"{hls}/master.m3u8", master_playlist(variants).encode())
        argv = [media.ffmpeg_path, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
                "-progress", "pipe:1", "-y", *ladder_args(source, work, rungs, info, settings, timeout_us)]  # fmt: skip
        process = await LiveProcess.start(argv)
        log.info("live transcode started", extra={"component": "live", "stream_id": stream_id, "rungs": len(rungs)})
        loop = asyncio.get_running_loop()
        next_check = loop.time() + LIVE_CHECK_INTERVAL
        ended_at: float | None = None
        interval = min(SYNC_INTERVAL, settings.part_seconds / 5) if settings.ll_hls else SYNC_INTERVAL
        try:
            while True:
                await ctx.check_lease("upload segments")
                for output in outputs:
                    await output.sync(storage)
                if not process.running:
                    break
                if loop.time() >= next_check:
                    next_check = loop.time() + LIVE_CHECK_INTERVAL
                    if not await _still_live(services, stream_id, session):
                        ended_at = ended_at or loop.time()
                        if loop.time() - ended_at > settings.input_timeout.total_seconds() + 3:
                            break  # the input should have ended by now
                    await ctx.report_progress(0.0, out_time=round(process.out_time, 1))
                await process.wait(interval)
            await process.wait(5)
            for output in outputs:
                await output.sync(storage)
                await output.flush(storage)
        finally:
            await process.stop()
        if await _still_live(services, stream_id, session):
            # ffmpeg died while the publisher is still there: the engine retries (a new run
            # continues the playlists with a discontinuity).
            raise TransientError(f"live transcode exited while live: {process.error_text()}")
