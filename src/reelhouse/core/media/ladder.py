"""Encode a profile: an HLS ladder in one ffmpeg process, or one progressive MP4.

The ladder decodes the source once, `split`s the frames to one scaler and encoder per rung,
and writes every variant plus the master playlist from the same process: N rungs cost one
decode, not N (WebEncode shipped this as unused library code and encoded only its first
profile). Outputs are written to a staging directory next to the target and moved into place
when complete, so a cancelled or failed attempt never leaves a half ladder where a finished
one is expected.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.encoders import Backend, VideoPipeline, video_pipeline
from reelhouse.core.media.ffmpeg import FfmpegResult, ProgressCallback, run_ffmpeg
from reelhouse.core.media.hw import (
    detect_capabilities,
    find_render_device,
    select_backend,
)
from reelhouse.core.media.playlist import complete_master_playlist
from reelhouse.core.media.probe import MediaInfo, probe_media
from reelhouse.core.media.profiles import Profile, Rendition, plan_ladder

MASTER_PLAYLIST = "master.m3u8"
VARIANT_PLAYLIST = "index.m3u8"
SEGMENT_PATTERN = "seg_%05d.ts"
FALLBACK_FPS = 30.0
MP4_KEYFRAME_SECONDS = 2  # short enough for snappy seeking in browsers, long enough to cost little
MAX_AAC_SAMPLE_RATE = 48_000


@dataclass(frozen=True)
class LadderResult:
    master_playlist: Path
    variant_playlists: dict[str, Path]
    """Rendition name -> its media playlist."""
    renditions: list[Rendition]
    """What was encoded, with real output sizes."""
    files: list[Path]
    """Every file written: master, variant playlists, segments."""
    backend: Backend
    ffmpeg: FfmpegResult


@dataclass(frozen=True)
class Mp4Result:
    path: Path
    rendition: Rendition
    backend: Backend
    ffmpeg: FfmpegResult

    @property
    def files(self) -> list[Path]:
        return [self.path]


def gop_frames(info: MediaInfo, seconds: int) -> int:
    fps = info.video.fps if info.video and info.video.fps else FALLBACK_FPS
    # Some containers report absurd base rates (90000/1 in MPEG-TS); a GOP sized from them is useless.
    if fps > 240:
        fps = FALLBACK_FPS
    return max(1, round(fps * seconds))


def video_filter_graph(pipeline: VideoPipeline, renditions: Sequence[Rendition]) -> str:
    """`[0:v]upload,split=N[s0]..;[s0]scale..[v0];...` with output labels v0..vN-1."""
    head = "[0:v]" + (pipeline.upload + "," if pipeline.upload else "")
    if len(renditions) == 1:
        only = renditions[0]
        return f"{head}{pipeline.scale_filter(only.width, only.height)}[v0]"
    split = f"{head}split={len(renditions)}" + "".join(f"[s{i}]" for i in range(len(renditions)))
    rungs = [f"[s{i}]{pipeline.scale_filter(r.width, r.height)}[v{i}]" for i, r in enumerate(renditions)]
    return ";".join([split, *rungs])


def audio_args(info: MediaInfo, renditions: Sequence[Rendition]) -> list[str]:
    audio = info.audio
    if audio is None:
        return []
    args = ["-c:a", "aac"]
    for i, rendition in enumerate(renditions):
        args += [f"-b:a:{i}", str(rendition.audio_bitrate)]
        # Surround is wasted on web players and a stereo AAC rung is what every device plays.
        if audio.channels > 2:
            args += [f"-ac:a:{i}", "2"]
    if audio.sample_rate and audio.sample_rate > MAX_AAC_SAMPLE_RATE:
        args += ["-ar", str(MAX_AAC_SAMPLE_RATE)]
    return args


def build_hls_ladder_args(
    source: str,
    out_dir: Path,
    renditions: Sequence[Rendition],
    info: MediaInfo,
    *,
    segment_seconds: int,
    pipeline: VideoPipeline,
) -> list[str]:
    """ffmpeg arguments (without the binary) for the whole ladder in one process."""
    has_audio = info.audio is not None
    args = [*pipeline.input_args, "-i", source, "-filter_complex", video_filter_graph(pipeline, renditions)]
    for i in range(len(renditions)):
        args += ["-map", f"[v{i}]"]
        if has_audio:
            args += ["-map", "0:a:0"]
    for i, rendition in enumerate(renditions):
        args += pipeline.encoder_args(i, rendition)
    args += audio_args(info, renditions)
    args += pipeline.gop_args(gop_frames(info, segment_seconds), segment_seconds)
    return args + hls_muxer_args(out_dir, renditions, has_audio=has_audio, segment_seconds=segment_seconds)


def hls_muxer_args(
    out_dir: Path, renditions: Sequence[Rendition], *, has_audio: bool, segment_seconds: int
) -> list[str]:
    """The HLS muxer half of a ladder command: one variant per rung (video i, audio i), VOD
    playlists, MPEG-TS segments, the master playlist. Shared by the one-process ladder and the
    stitch of a segment-parallel encode."""
    stream_map = " ".join(
        f"v:{i}" + (f",a:{i}" if has_audio else "") + f",name:{r.name}" for i, r in enumerate(renditions)
    )
    return [
        "-f",
        "hls",
        "-hls_time",
        str(segment_seconds),
        "-hls_playlist_type",
        "vod",
        "-hls_list_size",
        "0",
        "-hls_flags",
        "independent_segments",
        "-hls_segment_type",
        "mpegts",
        "-hls_segment_filename",
        str(out_dir / "%v" / SEGMENT_PATTERN),
        "-master_pl_name",
        MASTER_PLAYLIST,
        "-var_stream_map",
        stream_map,
        str(out_dir / "%v" / VARIANT_PLAYLIST),
    ]


def build_mp4_args(
    source: str,
    output: Path | str,
    rendition: Rendition,
    info: MediaInfo,
    *,
    pipeline: VideoPipeline,
    movflags: str = "+faststart",
) -> list[str]:
    """ffmpeg arguments for one progressive MP4, moov atom first so playback starts before download ends.

    `movflags` "+frag_keyframe+empty_moov+default_base_moof" makes a fragmented MP4 that can be
    written to a pipe or URL (faststart needs a seekable output file)."""
    args = [
        *pipeline.input_args,
        "-i",
        source,
        "-filter_complex",
        video_filter_graph(pipeline, [rendition]),
        "-map",
        "[v0]",
    ]
    if info.audio is not None:
        args += ["-map", "0:a:0"]
    args += pipeline.encoder_args(0, rendition)
    args += audio_args(info, [rendition])
    args += ["-g", str(gop_frames(info, MP4_KEYFRAME_SECONDS)), "-movflags", movflags, "-f", "mp4", str(output)]
    return args


async def _pipeline_for(info: MediaInfo, settings: MediaSettings, backend: Backend | None) -> VideoPipeline:
    if backend is None:
        if settings.hw_accel == "none":
            backend = "cpu"
        else:
            capabilities = await detect_capabilities(settings)
            backend = select_backend(capabilities, settings.hw_accel)
    vaapi_device = find_render_device() if backend == "vaapi" else None
    return video_pipeline(backend, info, vaapi_device=vaapi_device)


async def _prepare(
    source: str | Path, profile: Profile, kind: str, info: MediaInfo | None, settings: MediaSettings
) -> tuple[MediaInfo, list[Rendition]]:
    if profile.kind != kind:
        raise PermanentError(f"profile {profile.name!r} has kind {profile.kind!r}; this encode needs {kind!r}")
    info = info or await probe_media(source, settings=settings)
    if info.video is None:
        raise PermanentError(f"{source} has no video stream to encode")
    return info, plan_ladder(profile, info)


def _staging_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")


def _move_into_place(staging: Path, target: Path) -> None:
    # A file replaces atomically; a directory cannot replace a non-empty one, so the old ladder
    # is renamed aside first and deleted after the new one is in place.
    if staging.is_dir() and target.exists():
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, retired)
        os.replace(staging, target)
        _discard(retired)
    else:
        os.replace(staging, target)


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


async def encode_hls_ladder(
    source: str | Path,
    out_dir: Path,
    profile: Profile,
    *,
    info: MediaInfo | None = None,
    on_progress: ProgressCallback | None = None,
    settings: MediaSettings | None = None,
    backend: Backend | None = None,
) -> LadderResult:
    """Encode `source` to an HLS ladder in `out_dir` (`master.m3u8`, `<rung>/index.m3u8`,
    `<rung>/seg_NNNNN.ts`), replacing any previous contents once the new ladder is complete.

    `backend` None means: detect the hardware and apply HW_ACCEL. Raises PermanentError for
    unusable input, TransientError for conditions worth retrying (see `run_ffmpeg`).
    """
    settings = settings or get_settings().media
    info, renditions = await _prepare(source, profile, "hls", info, settings)
    pipeline = await _pipeline_for(info, settings, backend)
    segment_seconds = profile.segment_seconds or settings.hls_segment_seconds
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(out_dir)
    staging.mkdir()
    try:
        args = build_hls_ladder_args(
            str(source), staging, renditions, info, segment_seconds=segment_seconds, pipeline=pipeline
        )
        result = await run_ffmpeg(args, duration=info.duration, on_progress=on_progress, settings=settings)
        planned = {f"{r.name}/{VARIANT_PLAYLIST}": r for r in renditions}
        await complete_master_playlist(staging / MASTER_PLAYLIST, planned, settings)
        _move_into_place(staging, out_dir)
    except BaseException:
        _discard(staging)
        raise
    return LadderResult(
        master_playlist=out_dir / MASTER_PLAYLIST,
        variant_playlists={r.name: out_dir / r.name / VARIANT_PLAYLIST for r in renditions},
        renditions=renditions,
        files=sorted(path for path in out_dir.rglob("*") if path.is_file()),
        backend=pipeline.backend,
        ffmpeg=result,
    )


async def encode_mp4(
    source: str | Path,
    output: Path,
    profile: Profile,
    *,
    info: MediaInfo | None = None,
    on_progress: ProgressCallback | None = None,
    settings: MediaSettings | None = None,
    backend: Backend | None = None,
) -> Mp4Result:
    """Encode `source` to one progressive MP4 at `output` using an mp4 profile's rendition."""
    settings = settings or get_settings().media
    info, renditions = await _prepare(source, profile, "mp4", info, settings)
    pipeline = await _pipeline_for(info, settings, backend)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(output)
    try:
        args = build_mp4_args(str(source), staging, renditions[0], info, pipeline=pipeline)
        result = await run_ffmpeg(args, duration=info.duration, on_progress=on_progress, settings=settings)
        _move_into_place(staging, output)
    except BaseException:
        _discard(staging)
        raise
    return Mp4Result(path=output, rendition=renditions[0], backend=pipeline.backend, ffmpeg=result)
