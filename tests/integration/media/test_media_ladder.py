"""HLS ladders and MP4 encodes with a real ffmpeg, checked with ffprobe and the playlists."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from media_fixtures import ffmpeg_children, ffprobe_json, make_clip, top_level_atoms
from reelhouse.config import MediaSettings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.ffmpeg import Progress
from reelhouse.core.media.ladder import encode_hls_ladder, encode_mp4
from reelhouse.core.media.playlist import (
    parse_master_playlist,
    segment_durations,
    segment_files,
)
from reelhouse.core.media.profiles import Profile, builtin_profile

FAST_LADDER = builtin_profile("hls-default").with_preset("ultrafast")


def short_segments(profile: Profile, seconds: int = 1) -> Profile:
    return profile.model_copy(update={"segment_seconds": seconds})


def video_sizes(path: Path) -> list[tuple[int, int]]:
    streams = ffprobe_json(path, "-show_streams")["streams"]
    return [(s["width"], s["height"]) for s in streams if s["codec_type"] == "video"]


def audio_stream_count(path: Path) -> int:
    return sum(1 for s in ffprobe_json(path, "-show_streams")["streams"] if s["codec_type"] == "audio")


def starts_with_keyframe(segment: Path) -> bool:
    packets = ffprobe_json(
        segment, "-select_streams", "v:0", "-show_entries", "packet=flags", "-read_intervals", "%+#1"
    )["packets"]
    return packets[0]["flags"].startswith("K")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.slow
async def test_1080p_source_gives_a_four_rung_ladder_with_aligned_segments(
    tmp_path: Path, media_settings: MediaSettings
) -> None:
    source = make_clip(tmp_path / "source.mp4", width=1920, height=1080, duration=20.0, fps=30)
    reports: list[Progress] = []

    async def record(progress: Progress) -> None:
        reports.append(progress)

    result = await encode_hls_ladder(source, tmp_path / "hls", FAST_LADDER, on_progress=record, settings=media_settings)

    expected = [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
    assert [(r.name, r.width, r.height) for r in result.renditions] == expected
    assert result.backend == "cpu"
    assert reports[-1].finished and reports[-1].percent == 100.0
    assert len(reports) >= 2

    master = parse_master_playlist(result.master_playlist.read_text())
    assert [v.uri for v in master.variants] == [f"{name}/index.m3u8" for name, _, _ in expected]
    bandwidths = []
    for variant, (_, width, height) in zip(master.variants, expected, strict=True):
        assert variant.attributes["RESOLUTION"] == f"{width}x{height}"
        codecs = variant.attributes["CODECS"].strip('"').split(",")
        assert codecs[0].startswith("avc1.") and codecs[1] == "mp4a.40.2"
        bandwidths.append(int(variant.attributes["BANDWIDTH"]))
    assert bandwidths == sorted(bandwidths, reverse=True)

    # ffprobe follows the master playlist into every variant.
    assert sorted(video_sizes(result.master_playlist)) == sorted((w, h) for _, w, h in expected)
    assert audio_stream_count(result.master_playlist) == 4

    for name, playlist in result.variant_playlists.items():
        durations = segment_durations(playlist)
        assert len(durations) == 4, name
        assert all(abs(d - 6.0) <= 0.5 for d in durations[:-1]), (name, durations)
        assert sum(durations) == pytest.approx(20.0, abs=0.5)
        # Every segment opens on a keyframe: players can switch rungs at any boundary.
        assert all(starts_with_keyframe(segment) for segment in segment_files(playlist)), name

    on_disk = sorted(p for p in (tmp_path / "hls").rglob("*") if p.is_file())
    assert result.files == on_disk
    assert len(on_disk) == 1 + 4 * (1 + 4)
    assert leftovers(tmp_path) == []


async def test_480p_source_gets_no_upscaled_rungs(
    clip_480p: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    result = await encode_hls_ladder(clip_480p, tmp_path / "hls", short_segments(FAST_LADDER), settings=media_settings)

    assert [r.name for r in result.renditions] == ["480p", "360p"]
    assert video_sizes(result.variant_playlists["480p"]) == [(854, 480)]
    assert video_sizes(result.variant_playlists["360p"]) == [(640, 360)]
    assert len(parse_master_playlist(result.master_playlist.read_text()).variants) == 2
    assert sorted(p.name for p in (tmp_path / "hls").iterdir()) == ["360p", "480p", "master.m3u8"]


async def test_source_smaller_than_every_rung_is_encoded_once_at_its_own_size(
    av_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    result = await encode_hls_ladder(av_clip, tmp_path / "hls", short_segments(FAST_LADDER), settings=media_settings)

    assert [(r.name, r.width, r.height) for r in result.renditions] == [("240p", 320, 240)]
    assert video_sizes(result.variant_playlists["240p"]) == [(320, 240)]


async def test_source_without_audio_gives_video_only_variants(
    silent_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    result = await encode_hls_ladder(
        silent_clip, tmp_path / "hls", short_segments(FAST_LADDER), settings=media_settings
    )

    (variant,) = parse_master_playlist(result.master_playlist.read_text()).variants
    assert variant.attributes["CODECS"].strip('"').startswith("avc1.")
    assert "mp4a" not in variant.attributes["CODECS"]
    assert audio_stream_count(result.variant_playlists["240p"]) == 0
    assert video_sizes(result.variant_playlists["240p"]) == [(320, 240)]


async def test_rotated_phone_clip_is_encoded_upright(
    rotated_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    result = await encode_hls_ladder(
        rotated_clip, tmp_path / "hls", short_segments(FAST_LADDER), settings=media_settings
    )

    # Stored 320x240 with a 90 degree display matrix: the viewer sees 240x320, and so should the output.
    assert [(r.width, r.height) for r in result.renditions] == [(240, 320)]
    streams = ffprobe_json(segment_files(result.variant_playlists["240p"])[0], "-show_streams")["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (240, 320)
    assert not video.get("side_data_list")


async def test_a_rerun_replaces_the_previous_ladder(
    clip_480p: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    out = tmp_path / "hls"
    first = await encode_hls_ladder(clip_480p, out, short_segments(FAST_LADDER), settings=media_settings)
    assert set(first.variant_playlists) == {"480p", "360p"}
    only_360 = short_segments(FAST_LADDER).model_copy(update={"renditions": FAST_LADDER.renditions[-1:]})

    second = await encode_hls_ladder(clip_480p, out, only_360, settings=media_settings)

    assert sorted(p.name for p in out.iterdir()) == ["360p", "master.m3u8"]
    assert second.files == sorted(p for p in out.rglob("*") if p.is_file())
    assert leftovers(tmp_path) == []


async def test_corrupt_source_fails_permanently_and_writes_nothing(
    truncated_mp4: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    with pytest.raises(PermanentError) as caught:
        await encode_hls_ladder(truncated_mp4, tmp_path / "hls", FAST_LADDER, settings=media_settings)
    assert "moov atom not found" in caught.value.reason
    assert list(tmp_path.iterdir()) == []


async def test_audio_only_source_is_refused_for_a_video_ladder(
    audio_only_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    with pytest.raises(PermanentError, match="no video stream"):
        await encode_hls_ladder(audio_only_clip, tmp_path / "hls", FAST_LADDER, settings=media_settings)


async def test_cancelled_ladder_leaves_no_partial_output(tmp_path: Path) -> None:
    settings = MediaSettings(hw_accel="none", progress_save_interval=0.1)
    source = make_clip(tmp_path / "long.mp4", width=854, height=480, duration=10.0, fps=30)
    started = asyncio.Event()

    async def on_progress(progress: Progress) -> None:
        started.set()

    out = tmp_path / "hls"
    slow_ladder = builtin_profile("hls-default").with_preset("medium")
    task = asyncio.create_task(encode_hls_ladder(source, out, slow_ladder, on_progress=on_progress, settings=settings))
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert ffmpeg_children() == []


async def test_mp4_profile_output(tmp_path: Path, media_settings: MediaSettings) -> None:
    source = make_clip(tmp_path / "source.mp4", width=1280, height=720, duration=2.0, fps=30, faststart=False)

    result = await encode_mp4(
        source,
        tmp_path / "out" / "720p.mp4",
        builtin_profile("mp4-720p").with_preset("ultrafast"),
        settings=media_settings,
    )

    streams = ffprobe_json(result.path, "-show_streams")["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1280, 720)
    assert audio["codec_name"] == "aac"
    assert float(ffprobe_json(result.path, "-show_format")["format"]["duration"]) == pytest.approx(2.0, abs=0.1)
    atoms = top_level_atoms(result.path)
    assert atoms.index("moov") < atoms.index("mdat"), atoms  # +faststart
    assert result.files == [tmp_path / "out" / "720p.mp4"]
    assert leftovers(tmp_path / "out") == []


async def test_mp4_profile_never_upscales(clip_480p: Path, tmp_path: Path, media_settings: MediaSettings) -> None:
    result = await encode_mp4(
        clip_480p, tmp_path / "out.mp4", builtin_profile("mp4-1080p").with_preset("ultrafast"), settings=media_settings
    )

    assert (result.rendition.width, result.rendition.height) == (854, 480)
    assert video_sizes(result.path) == [(854, 480)]


async def test_wrong_profile_kind_is_refused(av_clip: Path, tmp_path: Path, media_settings: MediaSettings) -> None:
    with pytest.raises(PermanentError, match="has kind 'hls'; this encode needs 'mp4'"):
        await encode_mp4(av_clip, tmp_path / "out.mp4", FAST_LADDER, settings=media_settings)
