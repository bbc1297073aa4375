"""The ffmpeg command lines for each encoder backend. Only the CPU path can run on a machine
without a GPU, so the hardware variants are checked here as arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelhouse.core.media.encoders import Backend, smoke_test_args, video_pipeline
from reelhouse.core.media.ladder import (
    build_hls_ladder_args,
    build_mp4_args,
    video_filter_graph,
)
from reelhouse.core.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo
from reelhouse.core.media.profiles import builtin_profile, plan_ladder

OUT = Path("/out/hls")


def source(
    *,
    codec: str = "h264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    fps: float | None = 30.0,
    audio_channels: int | None = 2,
    sample_rate: int = 48_000,
) -> MediaInfo:
    video = VideoStreamInfo(index=0, codec=codec, width=1920, height=1080, fps=fps, pix_fmt=pix_fmt, rotation=rotation)
    audio = (
        [AudioStreamInfo(index=1, codec="aac", channels=audio_channels, sample_rate=sample_rate)]
        if audio_channels
        else []
    )
    return MediaInfo(path="in.mp4", format_name="mp4", duration=20.0, video_streams=[video], audio_streams=audio)


def ladder_args(info: MediaInfo, backend: Backend = "cpu", segment_seconds: int = 6) -> list[str]:
    renditions = plan_ladder(builtin_profile("hls-default"), info)
    pipeline = video_pipeline(backend, info, vaapi_device="/dev/dri/renderD129")
    return build_hls_ladder_args("in.mp4", OUT, renditions, info, segment_seconds=segment_seconds, pipeline=pipeline)


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def test_cpu_ladder_decodes_once_and_splits() -> None:
    args = ladder_args(source())

    assert values(args, "-i") == ["in.mp4"]
    graph = value(args, "-filter_complex")
    assert graph.startswith("[0:v]split=4[s0][s1][s2][s3];")
    assert "[s0]scale=1920:1080:flags=bicubic,setsar=1,format=yuv420p[v0]" in graph
    assert "[s3]scale=640:360:flags=bicubic,setsar=1,format=yuv420p[v3]" in graph
    assert values(args, "-map") == ["[v0]", "0:a:0", "[v1]", "0:a:0", "[v2]", "0:a:0", "[v3]", "0:a:0"]
    assert [value(args, f"-c:v:{i}") for i in range(4)] == ["libx264"] * 4
    assert value(args, "-preset:v:0") == "veryfast"
    assert (value(args, "-b:v:1"), value(args, "-maxrate:v:1"), value(args, "-bufsize:v:1")) == (
        "2800000",
        "2996000",
        "4200000",
    )
    assert (value(args, "-c:a"), value(args, "-b:a:0"), value(args, "-b:a:3")) == ("aac", "128000", "96000")
    assert "-hwaccel" not in args and "-ac:a:0" not in args


def test_hls_output_options() -> None:
    args = ladder_args(source(), segment_seconds=4)

    assert value(args, "-f") == "hls"
    assert value(args, "-hls_time") == "4"
    assert value(args, "-hls_playlist_type") == "vod"
    assert value(args, "-master_pl_name") == "master.m3u8"
    assert value(args, "-hls_segment_filename") == "/out/hls/%v/seg_%05d.ts"
    assert value(args, "-var_stream_map") == "v:0,a:0,name:1080p v:1,a:1,name:720p v:2,a:2,name:480p v:3,a:3,name:360p"
    assert args[-1] == "/out/hls/%v/index.m3u8"


@pytest.mark.parametrize(
    ("fps", "segment", "gop"),
    [(30.0, 6, "180"), (25.0, 6, "150"), (29.97, 4, "120"), (None, 6, "180"), (90000.0, 6, "180")],
)
def test_gop_is_one_segment_long_and_keyframes_are_forced_on_boundaries(
    fps: float | None, segment: int, gop: str
) -> None:
    args = ladder_args(source(fps=fps), segment_seconds=segment)

    assert value(args, "-g") == gop and value(args, "-keyint_min") == gop
    assert value(args, "-sc_threshold") == "0"
    assert value(args, "-force_key_frames") == f"expr:gte(t,n_forced*{segment})"


def test_source_without_audio_maps_no_audio() -> None:
    args = ladder_args(source(audio_channels=None))

    assert values(args, "-map") == ["[v0]", "[v1]", "[v2]", "[v3]"]
    assert "-c:a" not in args
    assert value(args, "-var_stream_map") == "v:0,name:1080p v:1,name:720p v:2,name:480p v:3,name:360p"


def test_surround_and_high_sample_rate_audio_is_made_web_friendly() -> None:
    args = ladder_args(source(audio_channels=6, sample_rate=96_000))

    assert [value(args, f"-ac:a:{i}") for i in range(4)] == ["2"] * 4
    assert value(args, "-ar") == "48000"


def test_nvenc_keeps_frames_on_the_gpu() -> None:
    args = ladder_args(source(), "nvenc")

    assert args[: args.index("-i")] == ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"]
    graph = value(args, "-filter_complex")
    assert graph.startswith("[0:v]split=4")
    assert "[s1]scale_cuda=w=1280:h=720:format=yuv420p,setsar=1[v1]" in graph
    assert [value(args, f"-c:v:{i}") for i in range(4)] == ["h264_nvenc"] * 4
    assert (value(args, "-preset:v:0"), value(args, "-rc:v:0")) == ("p2", "vbr")
    assert value(args, "-b:v:0") == "5000000"
    assert (value(args, "-forced-idr"), value(args, "-no-scenecut")) == ("1", "1")


def test_vaapi_uses_the_render_device_and_scale_vaapi() -> None:
    args = ladder_args(source(), "vaapi")

    prefix = args[: args.index("-i")]
    assert prefix[:6] == [
        "-hwaccel",
        "vaapi",
        "-hwaccel_device",
        "/dev/dri/renderD129",
        "-hwaccel_output_format",
        "vaapi",
    ]
    assert "[s2]scale_vaapi=w=854:h=480:format=nv12,setsar=1[v2]" in value(args, "-filter_complex")
    assert [value(args, f"-c:v:{i}") for i in range(4)] == ["h264_vaapi"] * 4
    assert "-preset:v:0" not in args
    assert value(args, "-maxrate:v:0") == "5350000"


def test_qsv_names_its_decoder_and_uses_scale_qsv() -> None:
    args = ladder_args(source(codec="hevc"), "qsv")

    prefix = args[: args.index("-i")]
    assert prefix[:4] == ["-hwaccel", "qsv", "-hwaccel_output_format", "qsv"]
    assert value(prefix, "-c:v") == "hevc_qsv"
    assert "[s3]scale_qsv=w=640:h=360,setsar=1[v3]" in value(args, "-filter_complex")
    assert [value(args, f"-c:v:{i}") for i in range(4)] == ["h264_qsv"] * 4
    assert value(args, "-preset:v:0") == "veryfast"
    assert value(args, "-forced_idr") == "1"


@pytest.mark.parametrize(
    ("backend", "device_args", "upload"),
    [
        ("nvenc", ["-init_hw_device", "cuda=gpu", "-filter_hw_device", "gpu"], "format=yuv420p,hwupload"),
        (
            "vaapi",
            ["-init_hw_device", "vaapi=gpu:/dev/dri/renderD129", "-filter_hw_device", "gpu"],
            "format=nv12,hwupload",
        ),
        ("qsv", ["-init_hw_device", "qsv=gpu", "-filter_hw_device", "gpu"], "format=nv12,hwupload=extra_hw_frames=64"),
    ],
)
@pytest.mark.parametrize("awkward", [{"rotation": 90}, {"pix_fmt": "yuv422p10le"}, {"codec": "prores"}])
def test_sources_the_gpu_cannot_decode_are_uploaded_once_before_the_split(
    backend: Backend, device_args: list[str], upload: str, awkward: dict
) -> None:
    args = ladder_args(source(**awkward), backend)

    assert args[: args.index("-i")] == device_args
    assert value(args, "-filter_complex").startswith(f"[0:v]{upload},split=")


def test_mp4_command() -> None:
    info = source()
    (rendition,) = plan_ladder(builtin_profile("mp4-720p"), info)
    args = build_mp4_args("in.mp4", Path("/out/720p.mp4"), rendition, info, pipeline=video_pipeline("cpu", info))

    assert value(args, "-filter_complex") == "[0:v]scale=1280:720:flags=bicubic,setsar=1,format=yuv420p[v0]"
    assert values(args, "-map") == ["[v0]", "0:a:0"]
    assert (value(args, "-c:v:0"), value(args, "-b:v:0"), value(args, "-b:a:0")) == ("libx264", "2800000", "128000")
    assert value(args, "-movflags") == "+faststart"
    assert value(args, "-g") == "60"
    assert args[-3:] == ["-f", "mp4", "/out/720p.mp4"]


def test_single_rung_graph_has_no_split() -> None:
    info = source()
    pipeline = video_pipeline("nvenc", source(rotation=90))
    graph = video_filter_graph(pipeline, plan_ladder(builtin_profile("mp4-1080p"), info))
    assert graph == "[0:v]format=yuv420p,hwupload,scale_cuda=w=1920:h=1080:format=yuv420p,setsar=1[v0]"


@pytest.mark.parametrize("backend", ["cpu", "nvenc", "vaapi", "qsv"])
def test_smoke_test_encodes_one_frame_with_the_backend_encoder(backend: Backend) -> None:
    args = smoke_test_args(backend, vaapi_device="/dev/dri/renderD128")
    assert value(args, "-frames:v") == "1"
    assert (
        value(args, "-c:v")
        == {"cpu": "libx264", "nvenc": "h264_nvenc", "vaapi": "h264_vaapi", "qsv": "h264_qsv"}[backend]
    )
    assert args[-3:] == ["-f", "null", "-"]
