"""Poster thumbnail, and a sprite sheet with the WebVTT track players use for seek previews.

The VTT maps each time range to a tile of the sheet (`sprite.jpg#xywh=x,y,w,h`), the format
video.js, Plyr and hls.js preview plugins read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.ffmpeg import run_ffmpeg
from reelhouse.core.media.probe import MediaInfo, probe_media
from reelhouse.core.media.profiles import even

THUMBNAIL_POSITION = 0.10  # 10 % in: past intros and black leaders, still representative
JPEG_QUALITY = "3"  # ffmpeg's mjpeg -q:v scale, 2 (best) .. 31


@dataclass(frozen=True)
class SpriteSheet:
    image: Path
    vtt: Path
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    interval: float
    """Seconds of video per tile."""
    tiles: int


def format_vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def sprite_vtt(
    image_name: str, *, duration: float, interval: float, tiles: int, columns: int, tile_width: int, tile_height: int
) -> str:
    cues = ["WEBVTT", ""]
    for n in range(tiles):
        start, end = n * interval, min((n + 1) * interval, duration)
        if start >= end:
            break
        x, y = (n % columns) * tile_width, (n // columns) * tile_height
        cues += [
            f"{format_vtt_time(start)} --> {format_vtt_time(end)}",
            f"{image_name}#xywh={x},{y},{tile_width},{tile_height}",
            "",
        ]
    return "\n".join(cues)


async def _video_info(source: str | Path, info: MediaInfo | None, settings: MediaSettings) -> MediaInfo:
    info = info or await probe_media(source, settings=settings)
    if info.video is None:
        raise PermanentError(f"{source} has no video stream to take pictures from")
    return info


def _tile_size(info: MediaInfo, width: int) -> tuple[int, int]:
    assert info.video is not None
    width = even(min(width, info.video.display_width))
    return width, even(width / info.video.display_aspect_ratio)


async def make_thumbnail(
    source: str | Path,
    output: Path,
    *,
    info: MediaInfo | None = None,
    width: int = 640,
    position: float = THUMBNAIL_POSITION,
    settings: MediaSettings | None = None,
) -> Path:
    """One JPEG from `position` (fraction of the duration) into the video, `width` px wide at most."""
    settings = settings or get_settings().media
    info = await _video_info(source, info, settings)
    at = (info.duration or 0.0) * position
    thumb_width, thumb_height = _tile_size(info, width)
    output.parent.mkdir(parents=True, exist_ok=True)
    # -ss before -i seeks on the demuxer (fast) and decodes only from the preceding keyframe.
    await run_ffmpeg(
        [
            "-ss",
            f"{at:.3f}",
            "-i",
            str(source),
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-vf",
            f"scale={thumb_width}:{thumb_height},setsar=1",
            "-q:v",
            JPEG_QUALITY,
            "-update",
            "1",
            str(output),
        ],
        settings=settings,
    )
    if not output.exists():
        raise PermanentError(f"no frame could be decoded from {source} at {at:.1f}s")
    return output


async def make_sprite_sheet(
    source: str | Path,
    out_dir: Path,
    *,
    info: MediaInfo | None = None,
    interval: float = 10.0,
    columns: int = 10,
    max_tiles: int = 100,
    tile_width: int = 160,
    image_name: str = "sprite.jpg",
    vtt_name: str = "sprite.vtt",
    settings: MediaSettings | None = None,
) -> SpriteSheet:
    """A grid of frames taken every `interval` seconds and its WebVTT index.

    Long videos widen the interval so the sheet never exceeds `max_tiles` (one image is what
    players fetch; 100 tiles of 160 px is a 1600 px wide JPEG of a few hundred kB).
    """
    settings = settings or get_settings().media
    info = await _video_info(source, info, settings)
    duration = info.duration
    if not duration or duration <= 0:
        raise PermanentError(f"{source} has no known duration; cannot lay out a sprite sheet")
    interval = max(interval, duration / max_tiles)
    tiles = max(1, math.ceil(duration / interval - 1e-9))
    columns = min(columns, tiles)
    rows = math.ceil(tiles / columns)
    width, height = _tile_size(info, tile_width)
    out_dir.mkdir(parents=True, exist_ok=True)
    image, vtt = out_dir / image_name, out_dir / vtt_name
    # fps=1/interval yields the frame nearest each multiple of the interval; tile lays them out
    # row by row, and -frames:v 1 keeps only the first sheet if rounding produced one extra frame.
    await run_ffmpeg(
        [
            "-i",
            str(source),
            "-map",
            "0:v:0",
            "-vf",
            f"fps=1/{interval:.6f},scale={width}:{height},setsar=1,tile={columns}x{rows}",
            "-frames:v",
            "1",
            "-q:v",
            JPEG_QUALITY,
            "-update",
            "1",
            str(image),
        ],
        duration=duration,
        settings=settings,
    )
    vtt.write_text(
        sprite_vtt(
            image_name,
            duration=duration,
            interval=interval,
            tiles=tiles,
            columns=columns,
            tile_width=width,
            tile_height=height,
        )
    )
    return SpriteSheet(
        image=image,
        vtt=vtt,
        columns=columns,
        rows=rows,
        tile_width=width,
        tile_height=height,
        interval=interval,
        tiles=tiles,
    )
