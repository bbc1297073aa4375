"""Media toolkit: ffprobe models, the ffmpeg runner, profiles, HLS/MP4 encodes, thumbnails.

Job handlers use these entry points; the modules hold the details.
"""

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
