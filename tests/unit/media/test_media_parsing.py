"""Parsers for ffmpeg's listings, HLS playlists, H.264 headers and WebVTT timestamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelhouse.core.media.hw import (
    HwCapabilities,
    parse_encoder_list,
    parse_hwaccel_list,
    select_backend,
)
from reelhouse.core.media.playlist import (
    VariantEntry,
    h264_codec_string,
    parse_attributes,
    parse_hexdump,
    parse_master_playlist,
    segment_durations,
)
from reelhouse.core.media.probe import media_info_from_ffprobe, parse_rate
from reelhouse.core.media.thumbs import format_vtt_time, sprite_vtt

ENCODERS = """Encoders:
 V..... = Video
 A..... = Audio
 S..... = Subtitle
 .F.... = Frame-level multithreading
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)
 V..... h264_qsv             H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (Intel Quick Sync Video acceleration) (codec h264)
 A..... aac                  AAC (Advanced Audio Coding)
 S..... webvtt               WebVTT subtitle
"""


def caps(*usable: str) -> HwCapabilities:
    return HwCapabilities(
        compiled_encoders=parse_encoder_list(ENCODERS), hwaccels=("cuda", "qsv"), usable_backends=usable
    )  # type: ignore[arg-type]


def test_encoder_and_hwaccel_listings() -> None:
    assert parse_encoder_list(ENCODERS) == {"libx264", "h264_nvenc", "h264_qsv", "aac", "webvtt"}
    assert parse_hwaccel_list("Hardware acceleration methods:\nvdpau\ncuda\nvaapi\n\n") == ("vdpau", "cuda", "vaapi")


def test_capability_list_advertises_software_and_working_hardware() -> None:
    assert caps().capability_list() == ["cpu", "aac", "libx264"]
    assert caps("nvenc").capability_list() == ["cpu", "aac", "libx264", "h264_nvenc"]


@pytest.mark.parametrize(
    ("usable", "setting", "chosen"),
    [
        ((), "auto", "cpu"),
        (("nvenc",), "auto", "nvenc"),
        (("qsv", "vaapi"), "auto", "qsv"),
        (("nvenc",), "none", "cpu"),
        (("nvenc", "vaapi"), "vaapi", "vaapi"),
        (("nvenc",), "qsv", "cpu"),
    ],
)
def test_backend_selection_honours_hw_accel(usable: tuple[str, ...], setting: str, chosen: str) -> None:
    assert select_backend(caps(*usable), setting) == chosen


MASTER = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-STREAM-INF:BANDWIDTH=5640800,RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"
1080p/index.m3u8

#EXT-X-STREAM-INF:BANDWIDTH=985600,RESOLUTION=640x360
360p/index.m3u8
"""


def test_master_playlist_round_trip() -> None:
    playlist = parse_master_playlist(MASTER)
    assert playlist.header == ["#EXTM3U", "#EXT-X-VERSION:6"]
    assert playlist.variants == [
        VariantEntry(
            "1080p/index.m3u8",
            {"BANDWIDTH": "5640800", "RESOLUTION": "1920x1080", "CODECS": '"avc1.640028,mp4a.40.2"'},
        ),
        VariantEntry("360p/index.m3u8", {"BANDWIDTH": "985600", "RESOLUTION": "640x360"}),
    ]
    assert parse_master_playlist(playlist.render()) == playlist
    with pytest.raises(ValueError):
        parse_master_playlist("1080p/index.m3u8\n")


def test_attribute_lists_keep_commas_inside_quotes() -> None:
    assert parse_attributes('CODECS="a,b",BANDWIDTH=1,NAME="x y"') == {
        "CODECS": '"a,b"',
        "BANDWIDTH": "1",
        "NAME": '"x y"',
    }


def test_segment_durations(tmp_path: Path) -> None:
    playlist = tmp_path / "index.m3u8"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.000000,\nseg_00000.ts\n#EXTINF:2.5,\nseg_00001.ts\n#EXT-X-ENDLIST\n"
    )
    assert segment_durations(playlist) == [6.0, 2.5]


def test_h264_codec_string_from_both_extradata_layouts() -> None:
    annex_b = parse_hexdump(
        "\n00000000: 0000 0167 42c0 0dda 0a11 f970 1100 0003  ...gB......p....\n"
        "00000010: 0001 0000 0300 3c0f 142a a000 0000 0168  ......<..*.....h\n"
        "00000020: ce3c 80                                  .<.\n"
    )
    assert len(annex_b) == 35
    assert h264_codec_string(annex_b) == "avc1.42c00d"
    avcc = bytes([1, 0x64, 0x00, 0x28, 0xFF, 0xE1])
    assert h264_codec_string(avcc) == "avc1.640028"
    assert h264_codec_string(b"\x00\x00\x01\x68\xce\x3c\x80") is None  # a PPS alone says nothing


def test_vtt_times_and_cues() -> None:
    assert format_vtt_time(0) == "00:00:00.000"
    assert format_vtt_time(3725.5) == "01:02:05.500"
    text = sprite_vtt("s.jpg", duration=2.5, interval=1.0, tiles=3, columns=2, tile_width=160, tile_height=90)
    assert text == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.000\ns.jpg#xywh=0,0,160,90\n\n"
        "00:00:01.000 --> 00:00:02.000\ns.jpg#xywh=160,0,160,90\n\n"
        "00:00:02.000 --> 00:00:02.500\ns.jpg#xywh=0,90,160,90\n"
    )


def test_frame_rates() -> None:
    assert parse_rate("30000/1001") == pytest.approx(29.97, abs=0.001)
    assert parse_rate("0/0") is None and parse_rate("") is None and parse_rate("25") == 25.0


def test_ffprobe_json_edge_cases() -> None:
    data = {
        "format": {"format_name": "mov,mp4", "duration": "N/A"},
        "streams": [
            {
                "index": 0,
                "codec_type": "audio",
                "codec_name": "aac",
                "channels": 2,
                "sample_rate": "44100",
                "duration": "12.5",
            },
            # Cover art is a one-frame video stream that must not count as video.
            {
                "index": 1,
                "codec_type": "video",
                "codec_name": "mjpeg",
                "width": 600,
                "height": 600,
                "disposition": {"attached_pic": 1},
            },
            {
                "index": 2,
                "codec_type": "video",
                "codec_name": "h264",
                "width": 1920,
                "height": 1080,
                "avg_frame_rate": "0/0",
                "r_frame_rate": "25/1",
                "sample_aspect_ratio": "0:1",
                "tags": {"rotate": "-90"},
            },
        ],
    }
    info = media_info_from_ffprobe("song.m4a", data)
    assert info.duration == 12.5
    video = info.video
    assert video is not None and len(info.video_streams) == 1
    assert (video.codec, video.fps, video.rotation, video.sample_aspect_ratio) == ("h264", 25.0, 270, 1.0)
    assert (video.display_width, video.display_height) == (1080, 1920)
