"""Thumbnail, sprite sheet and its WebVTT index from real clips."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import pytest

from media_fixtures import ffprobe_json, make_clip
from reelhouse.config import MediaSettings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.thumbs import make_sprite_sheet, make_thumbnail

CUE_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
CUE_TARGET = re.compile(r"^(?P<image>[\w.-]+)#xywh=(?P<x>\d+),(?P<y>\d+),(?P<w>\d+),(?P<h>\d+)$")


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_vtt(text: str) -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
    """Strict enough to fail on anything a player would reject: header, blank-line separated
    cues, HH:MM:SS.mmm timings, one media-fragment target per cue."""
    blocks = text.strip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        timing, target = block.split("\n")
        times, place = CUE_TIMING.match(timing), CUE_TARGET.match(target)
        assert times and place, block
        start, end = seconds(*times.groups()[:4]), seconds(*times.groups()[4:])
        xywh = tuple(int(place.group(k)) for k in "xywh")
        cues.append((start, end, place.group("image"), xywh))
    return cues


def image_size(path: Path) -> tuple[int, int]:
    stream = ffprobe_json(path, "-show_streams")["streams"][0]
    return stream["width"], stream["height"]


async def test_thumbnail_is_a_jpeg_at_the_requested_width(
    av_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    thumb = await make_thumbnail(av_clip, tmp_path / "poster.jpg", width=160, settings=media_settings)

    assert thumb.read_bytes()[:3] == b"\xff\xd8\xff"
    assert image_size(thumb) == (160, 120)


async def test_thumbnail_never_upscales(av_clip: Path, tmp_path: Path, media_settings: MediaSettings) -> None:
    thumb = await make_thumbnail(av_clip, tmp_path / "poster.jpg", width=1280, settings=media_settings)
    assert image_size(thumb) == (320, 240)


async def test_sprite_sheet_and_vtt_cover_the_whole_video(tmp_path: Path, media_settings: MediaSettings) -> None:
    source = make_clip(tmp_path / "source.mp4", width=320, height=180, duration=9.0, fps=10, audio=False)

    sheet = await make_sprite_sheet(
        source, tmp_path / "thumbs", interval=1.0, columns=4, tile_width=80, settings=media_settings
    )

    assert (sheet.tiles, sheet.columns, sheet.rows) == (9, 4, 3)
    assert (sheet.tile_width, sheet.tile_height) == (80, 46)
    assert image_size(sheet.image) == (4 * 80, 3 * 46)
    cues = parse_vtt(sheet.vtt.read_text())
    assert len(cues) == 9
    assert cues[0][0] == 0.0 and cues[-1][1] == pytest.approx(9.0)
    for (_, end, _, _), (start, _, _, _) in pairwise(cues):
        assert end == start  # contiguous, no gaps or overlaps
    for n, (_, _, image, (x, y, w, h)) in enumerate(cues):
        assert image == "sprite.jpg"
        assert (x, y, w, h) == ((n % 4) * 80, (n // 4) * 46, 80, 46)


async def test_sprite_interval_widens_to_fit_max_tiles(
    av_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    sheet = await make_sprite_sheet(av_clip, tmp_path, interval=0.1, max_tiles=4, columns=2, settings=media_settings)

    assert sheet.interval == pytest.approx(0.5)
    cues = parse_vtt(sheet.vtt.read_text())
    assert len(cues) == 4 and cues[-1][1] == pytest.approx(2.0)


async def test_audio_only_source_has_no_pictures(
    audio_only_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    with pytest.raises(PermanentError, match="no video stream"):
        await make_thumbnail(audio_only_clip, tmp_path / "poster.jpg", settings=media_settings)
    with pytest.raises(PermanentError, match="no video stream"):
        await make_sprite_sheet(audio_only_clip, tmp_path, settings=media_settings)
