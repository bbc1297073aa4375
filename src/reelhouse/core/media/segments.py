"""Segment-parallel encoding: split a source at keyframes, encode each piece of each rung on
its own, stitch the pieces into gapless HLS renditions or one MP4.

How the pieces fit without a gap or a doubled frame:
- Boundaries are source keyframes (`plan_segments`), preferring those on the HLS segment grid,
  so every rung's HLS segments can cut at the same instants. Times are relative to the
  source's start, as ffmpeg's `-ss` counts them.
- A piece [k_i, k_i+1) is cut half a millisecond early on both ends (`-ss`, `-t`): the
  keyframe at k_i is its first frame and the one at k_i+1 is not in it, however the printed
  timestamps rounded. `-output_ts_offset` puts its frames back at their source times.
- Closed GOPs of constant length (`-g`, `-keyint_min`, no scene cuts) with keyframes forced on
  the absolute grid (`t + offset`), so pieces of every rung agree on where GOPs start.
- Video only: audio is encoded once, from the source, while stitching. AAC per piece would add
  encoder priming at every boundary (the clicks WebEncode's `-c copy` concat kept).
- The stitch reads the pieces with the concat demuxer and exact `duration` directives (the
  distance between boundaries) and copies the video: the timeline is the source's.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.encoders import Backend, VideoPipeline
from reelhouse.core.media.failures import classify_failure
from reelhouse.core.media.ffmpeg import FfmpegResult, ProgressCallback, run_ffmpeg
from reelhouse.core.media.ladder import (
    MASTER_PLAYLIST,
    VARIANT_PLAYLIST,
    LadderResult,
    Mp4Result,
    _discard,
    _move_into_place,
    _pipeline_for,
    _staging_path,
    audio_args,
    gop_frames,
    hls_muxer_args,
    video_filter_graph,
)
from reelhouse.core.media.playlist import complete_master_playlist
from reelhouse.core.media.probe import MediaInfo
from reelhouse.core.media.process import run_tool
from reelhouse.core.media.profiles import Rendition

GRID_TOLERANCE = 0.002  # seconds: a keyframe this close to a grid point is on the grid
CUT_MARGIN = 0.0005  # seconds: far below any frame duration, above any timestamp rounding


@dataclass(frozen=True)
class Piece:
    index: int
    start: float
    """Seconds from the source's start (a keyframe, 0 for the first piece)."""
    end: float | None
    """The next piece's start; None for the last piece (it runs to the end of the source)."""

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


async def keyframe_times(locator: str, settings: MediaSettings | None = None) -> list[float]:
    """The first video stream's keyframe times, seconds from the source's start, ascending.

    Packets only (`-show_entries packet`): nothing is decoded, the demuxer reads the index or
    the stream."""
    settings = settings or get_settings().media
    argv = [
        settings.ffprobe_path,
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "format=start_time:packet=pts_time,flags",
        "-of",
        "json",
        "-i",
        locator,
    ]
    output = await run_tool(argv)
    if output.returncode != 0:
        raise classify_failure("ffprobe", output.returncode, output.stderr_text.splitlines(), inputs=[locator])
    try:
        data = json.loads(output.stdout)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"ffprobe returned unreadable keyframe data: {exc}") from None
    try:
        origin = float((data.get("format") or {}).get("start_time") or 0.0)
    except ValueError:
        origin = 0.0
    times = set()
    for packet in data.get("packets") or []:
        if "K" not in (packet.get("flags") or ""):
            continue
        try:
            times.add(round(float(packet["pts_time"]) - origin, 6))
        except (KeyError, ValueError):
            continue  # pts N/A
    return sorted(t for t in times if t >= 0)


def _on_grid(time: float, grid: float) -> bool:
    return abs(time - round(time / grid) * grid) <= GRID_TOLERANCE


def plan_segments(
    duration: float, keyframes: Sequence[float], count: int, *, min_seconds: float, grid_seconds: float
) -> list[Piece]:
    """At most `count` pieces of at least `min_seconds`, cut at keyframes near even splits,
    preferring keyframes on the `grid_seconds` grid (HLS segment length). One piece when the
    source is too short or has no usable keyframe."""
    count = min(count, int(duration // min_seconds)) if duration > 0 else 1
    bounds = [0.0]
    for i in range(1, max(count, 1)):
        ideal = duration * i / count
        # Room for this piece and for every piece still to come.
        latest = duration - (count - i) * min_seconds + 1e-6
        candidates = [k for k in keyframes if bounds[-1] + min_seconds - 1e-6 <= k <= latest]
        if not candidates:
            break
        on_grid = [k for k in candidates if _on_grid(k, grid_seconds)]
        slack = duration / count / 2
        pool = on_grid if on_grid and min(abs(k - ideal) for k in on_grid) <= slack else candidates
        bounds.append(min(pool, key=lambda k: abs(k - ideal)))
    return [Piece(i, start, bounds[i + 1] if i + 1 < len(bounds) else None) for i, start in enumerate(bounds)]


def build_segment_args(
    source: str,
    output: Path | str,
    rendition: Rendition,
    info: MediaInfo,
    piece: Piece,
    *,
    grid_seconds: int,
    pipeline: VideoPipeline,
    threads: int = 0,
) -> list[str]:
    """ffmpeg arguments for one piece of one rung: video only, MPEG-TS, source timestamps."""
    # A hair before the boundaries: the keyframe at `start` is in, the one at `end` is out,
    # whichever way the printed timestamps rounded.
    seek = max(piece.start - CUT_MARGIN, 0.0)
    args = [*pipeline.input_args]
    if piece.start > 0:
        args += ["-ss", f"{seek:.6f}"]
    if threads:
        args += ["-threads", str(threads)]
    args += ["-i", source]
    if piece.end is not None:
        args += ["-t", f"{piece.end - CUT_MARGIN - (seek if piece.start > 0 else 0.0):.6f}"]
    args += ["-filter_complex", video_filter_graph(pipeline, [rendition]), "-map", "[v0]", "-an", "-sn", "-dn"]
    args += pipeline.encoder_args(0, rendition)
    args += pipeline.gop_args(gop_frames(info, grid_seconds), None)
    # Keyframes on the absolute grid: `t` counts from this piece's first frame (at `seek`).
    first = math.ceil((piece.start - 0.001) / grid_seconds)
    args += ["-force_key_frames", f"expr:gte(t+{piece.start:.6f}+0.001,({first}+n_forced)*{grid_seconds})"]
    if pipeline.backend == "cpu":
        args += ["-flags", "+cgop"]
    if threads:
        args += ["-threads", str(threads)]
    args += [
        "-output_ts_offset",
        f"{piece.start:.6f}",
        "-muxdelay",
        "0",
        "-muxpreload",
        "0",
        "-f",
        "mpegts",
        str(output),
    ]
    return args


async def encode_segment(
    source: str | Path,
    output: Path,
    rendition: Rendition,
    info: MediaInfo,
    piece: Piece,
    *,
    grid_seconds: int,
    on_progress: ProgressCallback | None = None,
    settings: MediaSettings | None = None,
    backend: Backend | None = None,
) -> FfmpegResult:
    """Encode one piece of one rung to `output` (MPEG-TS, video only)."""
    settings = settings or get_settings().media
    if info.video is None:
        raise PermanentError(f"{source} has no video stream to encode")
    pipeline = await _pipeline_for(info, settings, backend)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(output)
    length = piece.duration if piece.duration is not None else max((info.duration or 0) - piece.start, 0.0) or None
    try:
        args = build_segment_args(
            str(source),
            staging,
            rendition,
            info,
            piece,
            grid_seconds=grid_seconds,
            pipeline=pipeline,
            threads=settings.ffmpeg_threads,
        )
        result = await run_ffmpeg(args, duration=length, on_progress=on_progress, settings=settings)
        _move_into_place(staging, output)
    except BaseException:
        _discard(staging)
        raise
    return result


def write_concat_list(path: Path, parts: Sequence[tuple[Path, float | None]]) -> Path:
    """An ffconcat list: each part with its exact duration (none for the last)."""
    lines = ["ffconcat version 1.0"]
    for part, duration in parts:
        quoted = str(part.resolve()).replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
        if duration is not None:
            lines.append(f"duration {duration:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _stitch_inputs(lists: Sequence[Path], source: str, info: MediaInfo, threads: int) -> list[str]:
    args: list[str] = []
    for listing in lists:
        args += ["-f", "concat", "-safe", "0", "-i", str(listing)]
    if info.audio is not None:
        if threads:
            args += ["-threads", str(threads)]
        args += ["-i", source]
    return args


async def stitch_hls(
    parts: dict[str, list[tuple[Path, float | None]]],
    source: str | Path,
    out_dir: Path,
    renditions: Sequence[Rendition],
    info: MediaInfo,
    *,
    segment_seconds: int,
    on_progress: ProgressCallback | None = None,
    settings: MediaSettings | None = None,
) -> LadderResult:
    """The ladder from encoded pieces: video copied, audio encoded once per rung from the
    source, HLS written by one ffmpeg process (master playlist included)."""
    settings = settings or get_settings().media
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(out_dir)
    staging.mkdir()
    lists_dir = out_dir.parent / f".{out_dir.name}.lists"
    lists_dir.mkdir(exist_ok=True)
    try:
        lists = [write_concat_list(lists_dir / f"{r.name}.ffconcat", parts[r.name]) for r in renditions]
        has_audio = info.audio is not None
        args = _stitch_inputs(lists, str(source), info, settings.ffmpeg_threads)
        audio_input = len(lists)
        for i in range(len(renditions)):
            args += ["-map", f"{i}:v:0"]
            if has_audio:
                args += ["-map", f"{audio_input}:a:0"]
        args += ["-c:v", "copy", *audio_args(info, renditions)]
        args += hls_muxer_args(staging, renditions, has_audio=has_audio, segment_seconds=segment_seconds)
        result = await run_ffmpeg(args, duration=info.duration, on_progress=on_progress, settings=settings)
        planned = {f"{r.name}/{VARIANT_PLAYLIST}": r for r in renditions}
        await complete_master_playlist(staging / MASTER_PLAYLIST, planned, settings)
        _move_into_place(staging, out_dir)
    except BaseException:
        _discard(staging)
        raise
    finally:
        shutil.rmtree(lists_dir, ignore_errors=True)
    return LadderResult(
        master_playlist=out_dir / MASTER_PLAYLIST,
        variant_playlists={r.name: out_dir / r.name / VARIANT_PLAYLIST for r in renditions},
        renditions=list(renditions),
        files=sorted(path for path in out_dir.rglob("*") if path.is_file()),
        backend="cpu",
        ffmpeg=result,
    )


async def stitch_mp4(
    parts: list[tuple[Path, float | None]],
    source: str | Path,
    output: Path,
    rendition: Rendition,
    info: MediaInfo,
    *,
    on_progress: ProgressCallback | None = None,
    settings: MediaSettings | None = None,
) -> Mp4Result:
    """One progressive MP4 from encoded pieces (video copied, audio encoded from the source)."""
    settings = settings or get_settings().media
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(output)
    listing = write_concat_list(output.parent / f".{output.name}.ffconcat", parts)
    try:
        args = _stitch_inputs([listing], str(source), info, settings.ffmpeg_threads)
        args += ["-map", "0:v:0"]
        if info.audio is not None:
            args += ["-map", "1:a:0"]
        args += ["-c:v", "copy", *audio_args(info, [rendition]), "-movflags", "+faststart", "-f", "mp4", str(staging)]
        result = await run_ffmpeg(args, duration=info.duration, on_progress=on_progress, settings=settings)
        _move_into_place(staging, output)
    except BaseException:
        _discard(staging)
        raise
    finally:
        listing.unlink(missing_ok=True)
    return Mp4Result(path=output, rendition=rendition, backend="cpu", ffmpeg=result)
