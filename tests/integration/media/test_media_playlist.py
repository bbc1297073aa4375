"""The master-playlist check against a real ladder: what ffmpeg wrote is what we would write."""

from __future__ import annotations

from pathlib import Path

from reelhouse.config import MediaSettings
from reelhouse.core.media.ladder import encode_hls_ladder
from reelhouse.core.media.playlist import (
    complete_master_playlist,
    parse_master_playlist,
    segment_codecs,
)
from reelhouse.core.media.profiles import builtin_profile


async def test_missing_codecs_bandwidth_resolution_are_restored(
    clip_480p: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    profile = builtin_profile("hls-default").with_preset("ultrafast").model_copy(update={"segment_seconds": 1})
    result = await encode_hls_ladder(clip_480p, tmp_path / "hls", profile, settings=media_settings)
    written_by_ffmpeg = parse_master_playlist(result.master_playlist.read_text())

    # Strip what some hardware encoders leave ffmpeg unable to write.
    stripped = [line.replace(",CODECS=", ",X-DROPPED=") for line in result.master_playlist.read_text().splitlines()]
    stripped = [line.replace("BANDWIDTH=", "X-BW=").replace("RESOLUTION=", "X-RES=") for line in stripped]
    result.master_playlist.write_text("\n".join(stripped) + "\n")

    planned = {f"{r.name}/index.m3u8": r for r in result.renditions}
    restored = await complete_master_playlist(result.master_playlist, planned, media_settings)

    reread = parse_master_playlist(result.master_playlist.read_text())
    assert [v.uri for v in reread.variants] == [v.uri for v in written_by_ffmpeg.variants]
    for ours, theirs, rendition in zip(reread.variants, written_by_ffmpeg.variants, result.renditions, strict=True):
        assert ours.attributes["CODECS"] == theirs.attributes["CODECS"]
        assert ours.attributes["RESOLUTION"] == theirs.attributes["RESOLUTION"]
        assert int(ours.attributes["BANDWIDTH"]) == rendition.peak_bandwidth
    assert restored.variants == reread.variants


async def test_segment_codecs_for_video_only_segment(
    silent_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    profile = builtin_profile("hls-default").with_preset("ultrafast")
    result = await encode_hls_ladder(silent_clip, tmp_path / "hls", profile, settings=media_settings)
    segment = next((tmp_path / "hls" / "240p").glob("*.ts"))

    codecs = await segment_codecs(segment, media_settings)

    expected = parse_master_playlist(result.master_playlist.read_text()).variants[0].attributes["CODECS"]
    assert f'"{codecs}"' == expected
