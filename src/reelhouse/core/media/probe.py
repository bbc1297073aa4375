"""ffprobe's JSON as typed models: what the ladder planner, the UI and the job records need."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.failures import classify_failure
from reelhouse.core.media.process import run_tool


def parse_rate(value: str | None) -> float | None:
    """'30000/1001' -> 29.97; ffprobe writes '0/0' when it does not know."""
    if not value:
        return None
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return None
    return float(rate) if rate > 0 else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN


class VideoStreamInfo(BaseModel):
    index: int
    codec: str
    profile: str | None = None
    width: int
    height: int
    fps: float | None
    """Average frame rate; falls back to the container's base rate (r_frame_rate)."""
    variable_frame_rate: bool = False
    """The average rate differs from the base rate: frame durations vary (phones, screen capture)."""
    pix_fmt: str | None = None
    rotation: int = 0
    """Display-matrix rotation as ffprobe reports it, normalised to 0/90/180/270. Only its axis
    matters to us: ffmpeg applies the direction itself when it decodes (autorotate)."""
    sample_aspect_ratio: float = 1.0
    bit_rate: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def display_width(self) -> int:
        return self.height if self.rotation in (90, 270) else self.width

    @computed_field  # type: ignore[prop-decorator]
    @property
    def display_height(self) -> int:
        return self.width if self.rotation in (90, 270) else self.height

    @property
    def display_aspect_ratio(self) -> float:
        """Width/height as shown to a viewer: pixel aspect applied, then rotation."""
        stored = self.width * self.sample_aspect_ratio / self.height
        return 1.0 / stored if self.rotation in (90, 270) else stored


class AudioStreamInfo(BaseModel):
    index: int
    codec: str
    profile: str | None = None
    channels: int
    sample_rate: int | None
    channel_layout: str | None = None
    bit_rate: int | None = None


class MediaInfo(BaseModel):
    path: str
    format_name: str
    format_long_name: str | None = None
    duration: float | None
    bit_rate: int | None = None
    size: int | None = None
    video_streams: list[VideoStreamInfo]
    audio_streams: list[AudioStreamInfo]

    @property
    def video(self) -> VideoStreamInfo | None:
        return self.video_streams[0] if self.video_streams else None

    @property
    def audio(self) -> AudioStreamInfo | None:
        return self.audio_streams[0] if self.audio_streams else None


def _rotation(stream: dict[str, Any]) -> int:
    for side_data in stream.get("side_data_list") or []:
        if "rotation" in side_data:
            return round(float(side_data["rotation"])) % 360
    # ffmpeg before 5.0 exported the display matrix as a `rotate` tag instead.
    tag = _float((stream.get("tags") or {}).get("rotate"))
    return round(tag) % 360 if tag is not None else 0


def _sample_aspect_ratio(value: str | None) -> float:
    if not value or ":" not in value:
        return 1.0
    num, _, den = value.partition(":")
    try:
        ratio = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return 1.0
    return float(ratio) if ratio > 0 else 1.0


def _video_stream(stream: dict[str, Any]) -> VideoStreamInfo | None:
    width, height = _int(stream.get("width")), _int(stream.get("height"))
    if not width or not height:
        return None
    avg, base = parse_rate(stream.get("avg_frame_rate")), parse_rate(stream.get("r_frame_rate"))
    return VideoStreamInfo(
        index=stream["index"],
        codec=stream.get("codec_name") or "unknown",
        profile=stream.get("profile"),
        width=width,
        height=height,
        fps=avg or base,
        variable_frame_rate=bool(avg and base and abs(avg - base) / base > 0.01),
        pix_fmt=stream.get("pix_fmt"),
        rotation=_rotation(stream),
        sample_aspect_ratio=_sample_aspect_ratio(stream.get("sample_aspect_ratio")),
        bit_rate=_int(stream.get("bit_rate")),
    )


def _audio_stream(stream: dict[str, Any]) -> AudioStreamInfo:
    return AudioStreamInfo(
        index=stream["index"],
        codec=stream.get("codec_name") or "unknown",
        profile=stream.get("profile"),
        channels=_int(stream.get("channels")) or 0,
        sample_rate=_int(stream.get("sample_rate")),
        channel_layout=stream.get("channel_layout"),
        bit_rate=_int(stream.get("bit_rate")),
    )


def media_info_from_ffprobe(path: str, data: dict[str, Any]) -> MediaInfo:
    fmt = data.get("format") or {}
    videos: list[VideoStreamInfo] = []
    audios: list[AudioStreamInfo] = []
    durations: list[float] = []
    for stream in data.get("streams") or []:
        kind = stream.get("codec_type")
        # Cover art in music files is a one-frame "video" stream; it is not something to encode.
        if kind == "video" and not (stream.get("disposition") or {}).get("attached_pic"):
            video = _video_stream(stream)
            if video:
                videos.append(video)
        elif kind == "audio":
            audios.append(_audio_stream(stream))
        else:
            continue
        if (duration := _float(stream.get("duration"))) is not None:
            durations.append(duration)
    duration = _float(fmt.get("duration"))
    if duration is None and durations:
        duration = max(durations)
    return MediaInfo(
        path=path,
        format_name=fmt.get("format_name") or "unknown",
        format_long_name=fmt.get("format_long_name"),
        duration=duration,
        bit_rate=_int(fmt.get("bit_rate")),
        size=_int(fmt.get("size")),
        video_streams=videos,
        audio_streams=audios,
    )


async def probe_media(path: str | Path, *, settings: MediaSettings | None = None) -> MediaInfo:
    """Describe a media file. Raises `PermanentError` when it is missing, corrupt or holds no
    audio/video, `TransientError` when ffprobe itself could not run."""
    settings = settings or get_settings().media
    target = str(path)
    argv = [
        settings.ffprobe_path,
        "-hide_banner",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        target,
    ]
    output = await run_tool(argv)
    if output.returncode != 0:
        raise classify_failure("ffprobe", output.returncode, output.stderr_text.splitlines(), inputs=[target])
    try:
        data = json.loads(output.stdout)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"ffprobe returned unreadable output for {target}: {exc}") from None
    info = media_info_from_ffprobe(target, data)
    if not info.video_streams and not info.audio_streams:
        detail = output.stderr_text.strip().splitlines()
        raise PermanentError(f"no audio or video streams in {target}" + (f": {detail[-1]}" if detail else ""))
    return info
