"""Encoding profiles as data, and the planner that fits a profile's ladder to one source.

A `Profile` validates from a plain dict (API bodies, database rows), so custom profiles are the
same objects as the built-ins. WebEncode hard-coded five presets and silently fell back to
720p for anything else; here an invalid profile fails validation with the field named.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from reelhouse.core.media.probe import MediaInfo

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]

MAX_RENDITIONS = 8
MAX_WIDTH, MAX_HEIGHT = 7680, 4320  # 8K UHD
MIN_DIMENSION = 16
MAX_VIDEO_BITRATE = 200_000_000  # above any sane H.264 ladder rung, 8K included
MAX_AUDIO_BITRATE = 1_000_000
PROFILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*(?:bps|b/s)?\s*$")


def parse_bitrate(value: Any) -> Any:
    """Accept ffmpeg-style bitrates ('5000k', '5M', 800000) and store bits per second."""
    if isinstance(value, str):
        match = _BITRATE.match(value) if len(value) <= 32 else None
        if not match:
            raise ValueError(f"invalid bitrate {value[:32]!r} (examples: 800k, 5M, 128000)")
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        return int(float(match.group(1)) * scale)
    return value


Bitrate = Annotated[int, BeforeValidator(parse_bitrate), Field(gt=0, le=MAX_VIDEO_BITRATE)]
AudioBitrate = Annotated[int, BeforeValidator(parse_bitrate), Field(ge=8_000, le=MAX_AUDIO_BITRATE)]


def even(value: float) -> int:
    """Nearest even integer (halves round up), at least 2: 4:2:0 chroma needs even dimensions."""
    return max(2, 2 * math.floor(value / 2 + 0.5))


def floor_even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


class Rendition(BaseModel):
    """One rung: the nominal size (height is the 'p' number) and its rate control."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    width: int = Field(ge=MIN_DIMENSION, le=MAX_WIDTH)
    height: int = Field(ge=MIN_DIMENSION, le=MAX_HEIGHT)
    video_bitrate: Bitrate
    maxrate: Bitrate | None = None
    bufsize: Annotated[int, BeforeValidator(parse_bitrate), Field(gt=0, le=4 * MAX_VIDEO_BITRATE)] | None = None
    audio_bitrate: AudioBitrate = 128_000
    codec: Literal["h264"] = "h264"
    preset: Preset = "veryfast"

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (H.264 4:2:0 needs even dimensions)")
        return value

    @model_validator(mode="after")
    def _rate_control(self) -> Rendition:
        # Capped VBR by default: peaks up to 1.07x, a 1.5x buffer, the usual HLS authoring advice.
        if self.maxrate is None:
            object.__setattr__(self, "maxrate", min(round(self.video_bitrate * 1.07), MAX_VIDEO_BITRATE))
        if self.bufsize is None:
            object.__setattr__(self, "bufsize", round(self.video_bitrate * 1.5))
        assert self.maxrate is not None
        if self.maxrate < self.video_bitrate:
            raise ValueError("maxrate must be at least video_bitrate")
        return self

    @property
    def peak_bandwidth(self) -> int:
        """Bits per second a player must sustain (HLS BANDWIDTH): peak video plus audio."""
        assert self.maxrate is not None
        return self.maxrate + self.audio_bitrate


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=PROFILE_NAME_PATTERN)
    kind: Literal["hls", "mp4"] = "hls"
    renditions: list[Rendition] = Field(min_length=1, max_length=MAX_RENDITIONS)
    segment_seconds: int | None = Field(None, ge=1, le=60)
    """HLS segment length; None means the worker's HLS_SEGMENT_SECONDS."""

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        names = [r.name for r in self.renditions]
        if len(set(names)) != len(names):
            raise ValueError(f"rendition names must be unique, got {names[:MAX_RENDITIONS]}")
        if self.kind == "mp4" and len(self.renditions) != 1:
            raise ValueError("an mp4 profile has exactly one rendition")
        ordered = sorted(self.renditions, key=lambda r: r.height, reverse=True)
        object.__setattr__(self, "renditions", ordered)
        return self

    def with_preset(self, preset: Preset) -> Profile:
        """The same ladder at another encoder speed (tests and benches use ultrafast)."""
        return self.model_copy(
            update={"renditions": [r.model_copy(update={"preset": preset}) for r in self.renditions]}
        )


def load_profile(data: Mapping[str, Any]) -> Profile:
    """Validate a custom profile from stored or submitted data; raises pydantic's ValidationError."""
    return Profile.model_validate(dict(data))


BUILTIN_PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        load_profile(
            {
                "name": "hls-default",
                "kind": "hls",
                "renditions": [
                    {"name": "1080p", "width": 1920, "height": 1080, "video_bitrate": "5000k", "audio_bitrate": "128k"},
                    {"name": "720p", "width": 1280, "height": 720, "video_bitrate": "2800k", "audio_bitrate": "128k"},
                    {"name": "480p", "width": 854, "height": 480, "video_bitrate": "1400k", "audio_bitrate": "96k"},
                    {"name": "360p", "width": 640, "height": 360, "video_bitrate": "800k", "audio_bitrate": "96k"},
                ],
            }
        ),
        load_profile(
            {
                "name": "mp4-720p",
                "kind": "mp4",
                "renditions": [
                    {"name": "720p", "width": 1280, "height": 720, "video_bitrate": "2800k", "audio_bitrate": "128k"}
                ],
            }
        ),
        load_profile(
            {
                "name": "mp4-1080p",
                "kind": "mp4",
                "renditions": [
                    {"name": "1080p", "width": 1920, "height": 1080, "video_bitrate": "5000k", "audio_bitrate": "160k"}
                ],
            }
        ),
    )
}


def builtin_profile(name: str) -> Profile:
    try:
        return BUILTIN_PROFILES[name]
    except KeyError:
        raise LookupError(f"unknown profile {name!r}; built-in profiles: {', '.join(BUILTIN_PROFILES)}") from None


def plan_ladder(profile: Profile, info: MediaInfo) -> list[Rendition]:
    """The renditions to encode for this source, with their real output sizes.

    A rung's height is its nominal 'p' number and applies to the source's short side, so a
    portrait phone clip gets a 1080p rung that is 1080 wide. Rungs above the source are dropped
    (upscaling only wastes bits); a source smaller than every rung gets one rung at its own size,
    with the lowest rung's rate control. The other side follows the display aspect ratio
    (pixel aspect and rotation applied), rounded to even.
    """
    video = info.video
    if video is None:
        raise ValueError(f"{info.path} has no video stream to encode")
    aspect = video.display_aspect_ratio
    portrait = aspect < 1.0
    source_short = video.display_width if portrait else video.display_height
    # Rounding the derived side to even must not push it past the source (no 1-pixel upscale).
    derived_limit = floor_even((source_short / aspect if portrait else source_short * aspect) + 1e-6)

    def sized(rung: Rendition, short_side: int) -> Rendition:
        derived = min(even(short_side / aspect if portrait else short_side * aspect), derived_limit)
        width, height = (short_side, derived) if portrait else (derived, short_side)
        return rung.model_copy(update={"width": width, "height": height})

    planned = [sized(rung, rung.height) for rung in profile.renditions if rung.height <= source_short]
    if planned:
        return planned
    lowest = profile.renditions[-1]
    short = floor_even(source_short)
    return [sized(lowest.model_copy(update={"name": f"{short}p"}), short)]
