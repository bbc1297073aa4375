"""Media toolkit: ffprobe models, the ffmpeg runner, profiles, HLS/MP4 encodes, thumbnails.

Job handlers use these entry points; the modules hold the details.

Submodules load on first use (PEP 562), so a process that needs only one of them (the yt-dlp
runner, or `process`) does not pay for the rest (pydantic and the settings tree come with ffmpeg).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reelhouse.core.media.ffmpeg import (
        FfmpegResult,
        Progress,
        ProgressCallback,
        run_ffmpeg,
    )
    from reelhouse.core.media.hw import HwCapabilities, detect_capabilities, select_backend
    from reelhouse.core.media.ladder import (
        LadderResult,
        Mp4Result,
        encode_hls_ladder,
        encode_mp4,
    )
    from reelhouse.core.media.probe import (
        AudioStreamInfo,
        MediaInfo,
        VideoStreamInfo,
        probe_media,
    )
    from reelhouse.core.media.profiles import (
        BUILTIN_PROFILES,
        Profile,
        Rendition,
        builtin_profile,
        load_profile,
        plan_ladder,
    )
    from reelhouse.core.media.thumbs import SpriteSheet, make_sprite_sheet, make_thumbnail

_HOMES = {
    "FfmpegResult": "reelhouse.core.media.ffmpeg",
    "Progress": "reelhouse.core.media.ffmpeg",
    "ProgressCallback": "reelhouse.core.media.ffmpeg",
    "run_ffmpeg": "reelhouse.core.media.ffmpeg",
    "HwCapabilities": "reelhouse.core.media.hw",
    "detect_capabilities": "reelhouse.core.media.hw",
    "select_backend": "reelhouse.core.media.hw",
    "LadderResult": "reelhouse.core.media.ladder",
    "Mp4Result": "reelhouse.core.media.ladder",
    "encode_hls_ladder": "reelhouse.core.media.ladder",
    "encode_mp4": "reelhouse.core.media.ladder",
    "AudioStreamInfo": "reelhouse.core.media.probe",
    "MediaInfo": "reelhouse.core.media.probe",
    "VideoStreamInfo": "reelhouse.core.media.probe",
    "probe_media": "reelhouse.core.media.probe",
    "BUILTIN_PROFILES": "reelhouse.core.media.profiles",
    "Profile": "reelhouse.core.media.profiles",
    "Rendition": "reelhouse.core.media.profiles",
    "builtin_profile": "reelhouse.core.media.profiles",
    "load_profile": "reelhouse.core.media.profiles",
    "plan_ladder": "reelhouse.core.media.profiles",
    "SpriteSheet": "reelhouse.core.media.thumbs",
    "make_sprite_sheet": "reelhouse.core.media.thumbs",
    "make_thumbnail": "reelhouse.core.media.thumbs",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "BUILTIN_PROFILES",
    "AudioStreamInfo",
    "FfmpegResult",
    "HwCapabilities",
    "LadderResult",
    "MediaInfo",
    "Mp4Result",
    "Profile",
    "Progress",
    "ProgressCallback",
    "Rendition",
    "SpriteSheet",
    "VideoStreamInfo",
    "builtin_profile",
    "detect_capabilities",
    "encode_hls_ladder",
    "encode_mp4",
    "load_profile",
    "make_sprite_sheet",
    "make_thumbnail",
    "plan_ladder",
    "probe_media",
    "run_ffmpeg",
    "select_backend",
]
