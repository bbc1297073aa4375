"""Profile validation and ladder planning (pure functions, no ffmpeg)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from reelhouse.core.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo
from reelhouse.core.media.profiles import (
    BUILTIN_PROFILES,
    builtin_profile,
    load_profile,
    plan_ladder,
)

LADDER = builtin_profile("hls-default")


def source(width: int, height: int, *, rotation: int = 0, sar: float = 1.0) -> MediaInfo:
    video = VideoStreamInfo(
        index=0,
        codec="h264",
        width=width,
        height=height,
        fps=30.0,
        pix_fmt="yuv420p",
        rotation=rotation,
        sample_aspect_ratio=sar,
    )
    audio = AudioStreamInfo(index=1, codec="aac", channels=2, sample_rate=48_000)
    return MediaInfo(path="in.mp4", format_name="mp4", duration=10.0, video_streams=[video], audio_streams=[audio])


def sizes(profile_name: str, info: MediaInfo) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in plan_ladder(builtin_profile(profile_name), info)]


def test_builtin_profiles() -> None:
    assert set(BUILTIN_PROFILES) == {"hls-default", "mp4-720p", "mp4-1080p"}
    assert [r.height for r in LADDER.renditions] == [1080, 720, 480, 360]
    assert all(r.codec == "h264" for r in LADDER.renditions)
    rates = [r.video_bitrate for r in LADDER.renditions]
    assert rates == sorted(rates, reverse=True)
    assert builtin_profile("mp4-720p").kind == "mp4"
    with pytest.raises(LookupError, match="hls-default"):
        builtin_profile("4k-hevc")


def test_custom_profile_from_a_dict() -> None:
    profile = load_profile(
        {
            "name": "compact",
            "segment_seconds": 4,
            "renditions": [
                {"name": "low", "width": 640, "height": 360, "video_bitrate": "600k", "audio_bitrate": "64k"},
                {
                    "name": "high",
                    "width": 1280,
                    "height": 720,
                    "video_bitrate": "2.5M",
                    "maxrate": "3M",
                    "bufsize": 5_000_000,
                    "preset": "fast",
                },
            ],
        }
    )

    assert profile.kind == "hls" and profile.segment_seconds == 4
    assert [r.name for r in profile.renditions] == ["high", "low"]  # ordered top rung first
    high, low = profile.renditions
    assert (high.video_bitrate, high.maxrate, high.bufsize, high.preset) == (2_500_000, 3_000_000, 5_000_000, "fast")
    assert (low.video_bitrate, low.maxrate, low.bufsize, low.audio_bitrate) == (600_000, 642_000, 900_000, 64_000)
    assert low.peak_bandwidth == 642_000 + 64_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 641}, "must be even"),
        ({"video_bitrate": "fast"}, "invalid bitrate"),
        ({"maxrate": "100k"}, "maxrate must be at least video_bitrate"),
        ({"name": "720p,a:1"}, "String should match pattern"),
        ({"codec": "vp9"}, "Input should be 'h264'"),
        ({"preset": "ludicrous"}, "Input should be 'ultrafast'"),
    ],
)
def test_invalid_rendition_is_rejected_with_the_field(change: dict, message: str) -> None:
    rendition = {"name": "360p", "width": 640, "height": 360, "video_bitrate": "800k", **change}
    with pytest.raises(ValidationError, match=message):
        load_profile({"name": "bad", "renditions": [rendition]})


def test_profile_level_rules() -> None:
    rung = {"name": "360p", "width": 640, "height": 360, "video_bitrate": "800k"}
    with pytest.raises(ValidationError, match="unique"):
        load_profile({"name": "dup", "renditions": [rung, rung]})
    with pytest.raises(ValidationError, match="exactly one rendition"):
        load_profile({"name": "two", "kind": "mp4", "renditions": [rung, {**rung, "name": "other"}]})
    with pytest.raises(ValidationError):
        load_profile({"name": "empty", "renditions": []})


def test_with_preset_changes_every_rung_and_nothing_else() -> None:
    fast = LADDER.with_preset("ultrafast")
    assert {r.preset for r in fast.renditions} == {"ultrafast"}
    assert [r.model_copy(update={"preset": "veryfast"}) for r in fast.renditions] == LADDER.renditions
    assert {r.preset for r in LADDER.renditions} == {"veryfast"}


def test_full_hd_source_keeps_every_rung() -> None:
    assert sizes("hls-default", source(1920, 1080)) == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]


def test_rungs_above_the_source_are_dropped() -> None:
    assert sizes("hls-default", source(854, 480)) == [("480p", 854, 480), ("360p", 640, 360)]
    assert sizes("hls-default", source(1280, 720)) == [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]


def test_width_follows_the_source_aspect() -> None:
    assert sizes("hls-default", source(1440, 1080))[1:] == [("720p", 960, 720), ("480p", 640, 480), ("360p", 480, 360)]
    # Scope, 2048x858: 720 * 2048 / 858 = 1718.6 -> 1718
    assert sizes("hls-default", source(2048, 858))[0] == ("720p", 1718, 720)


def test_portrait_rungs_apply_to_the_short_side() -> None:
    assert sizes("hls-default", source(1080, 1920))[:2] == [("1080p", 1080, 1920), ("720p", 720, 1280)]
    # The same clip stored landscape with a 90 degree display matrix plans identically.
    assert sizes("hls-default", source(1920, 1080, rotation=90)) == sizes("hls-default", source(1080, 1920))


def test_anamorphic_pixels_are_made_square() -> None:
    # DVD NTSC 16:9: 720x480 stored, 32:27 pixels, shown as 853x480.
    assert sizes("mp4-720p", source(720, 480, sar=32 / 27)) == [("480p", 852, 480)]


def test_tiny_source_is_kept_at_its_own_even_size() -> None:
    assert sizes("hls-default", source(320, 240)) == [("240p", 320, 240)]
    assert sizes("hls-default", source(321, 241)) == [("240p", 320, 240)]
    assert sizes("mp4-1080p", source(200, 150)) == [("150p", 200, 150)]
    lowest = plan_ladder(LADDER, source(320, 240))[0]
    assert lowest.video_bitrate == LADDER.renditions[-1].video_bitrate


def test_audio_only_source_cannot_be_planned() -> None:
    info = source(320, 240).model_copy(update={"video_streams": []})
    with pytest.raises(ValueError, match="no video stream"):
        plan_ladder(LADDER, info)


@given(
    width=st.integers(min_value=16, max_value=4096),
    height=st.integers(min_value=16, max_value=4096),
    rotation=st.sampled_from([0, 90, 180, 270]),
)
def test_planned_sizes_are_even_never_upscaled_and_keep_the_aspect(width: int, height: int, rotation: int) -> None:
    info = source(width, height, rotation=rotation)
    video = info.video
    assert video is not None
    planned = plan_ladder(LADDER, info)

    assert planned
    for rung in planned:
        assert rung.width % 2 == 0 and rung.height % 2 == 0
        assert rung.width <= max(video.display_width, 2) and rung.height <= max(video.display_height, 2)
        # The short side is exact; the other is off by rounding to even (1 px) and the
        # no-upscale clamp (2 px) at most.
        aspect = video.display_aspect_ratio
        if aspect >= 1:
            assert abs(rung.width - rung.height * aspect) <= 3
        else:
            assert abs(rung.height - rung.width / aspect) <= 3
    heights = [min(r.width, r.height) for r in planned]
    assert heights == sorted(heights, reverse=True)
