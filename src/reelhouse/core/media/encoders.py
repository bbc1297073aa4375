"""Per-backend pieces of an H.264 encode: decoder flags, scaler, encoder and rate control.

The ladder builder asks a `VideoPipeline` for each piece, so the CPU path (libx264) and the
hardware paths (NVENC, VAAPI, Quick Sync) share one command layout and differ only here.
Frames stay on the GPU from decode to encode when the GPU can decode the source; otherwise
(rotated sources, exotic codecs or pixel formats) ffmpeg decodes on the CPU, rotates, and
uploads once before the split, so the scalers still run on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reelhouse.core.media.probe import MediaInfo
from reelhouse.core.media.profiles import Rendition

Backend = Literal["cpu", "nvenc", "vaapi", "qsv"]
HARDWARE_BACKENDS: tuple[Backend, ...] = ("nvenc", "qsv", "vaapi")
H264_ENCODERS: dict[Backend, str] = {"cpu": "libx264", "nvenc": "h264_nvenc", "vaapi": "h264_vaapi", "qsv": "h264_qsv"}
DEFAULT_VAAPI_DEVICE = "/dev/dri/renderD128"

_NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p4",
    "medium": "p5",
    "slow": "p6",
    "slower": "p7",
    "veryslow": "p7",
}
_QSV_PRESETS = {"ultrafast": "veryfast", "superfast": "veryfast"}  # others share x264's names

# Codecs the GPU decoders handle for 8-bit 4:2:0 content (CUDA/VAAPI hwaccels)...
_HW_DECODABLE = {"h264", "hevc", "vp9", "av1", "mpeg2video"}
# ...while Quick Sync needs its own decoder named explicitly.
_QSV_DECODERS = {"h264": "h264_qsv", "hevc": "hevc_qsv", "vp9": "vp9_qsv", "av1": "av1_qsv"}
_HW_PIXEL_FORMATS = {"yuv420p", "yuvj420p", "nv12"}
# Decoder surfaces are shared by every rung through `split`; without headroom the pool runs dry.
_EXTRA_HW_FRAMES = "16"


def keyframe_expression(segment_seconds: int) -> str:
    return f"expr:gte(t,n_forced*{segment_seconds})"


@dataclass(frozen=True)
class VideoPipeline:
    backend: Backend
    input_args: list[str] = field(default_factory=list)
    """Options placed before `-i` (hwaccel, device creation, decoder)."""
    upload: str = ""
    """Filter run once before the split, moving CPU frames to the device ('' if already there)."""

    @property
    def encoder(self) -> str:
        return H264_ENCODERS[self.backend]

    @property
    def hw_decode(self) -> bool:
        return self.backend != "cpu" and not self.upload

    def scale_filter(self, width: int, height: int) -> str:
        """Scale one rung; setsar=1 because the target size already carries the display aspect."""
        if self.backend == "nvenc":
            return f"scale_cuda=w={width}:h={height}:format=yuv420p,setsar=1"
        if self.backend == "vaapi":
            return f"scale_vaapi=w={width}:h={height}:format=nv12,setsar=1"
        if self.backend == "qsv":
            return f"scale_qsv=w={width}:h={height},setsar=1"
        return f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p"

    def encoder_args(self, index: int, rendition: Rendition) -> list[str]:
        """Codec and rate control for output video stream `index` (capped VBR)."""
        s = f"v:{index}"
        args = [f"-c:{s}", self.encoder]
        if self.backend == "cpu":
            args += [f"-preset:{s}", rendition.preset]
        elif self.backend == "nvenc":
            args += [f"-preset:{s}", _NVENC_PRESETS[rendition.preset], f"-rc:{s}", "vbr"]
        elif self.backend == "qsv":
            args += [f"-preset:{s}", _QSV_PRESETS.get(rendition.preset, rendition.preset)]
        # VAAPI has no speed presets; its rate control follows from the bitrates below.
        args += [
            f"-b:{s}",
            str(rendition.video_bitrate),
            f"-maxrate:{s}",
            str(rendition.maxrate),
            f"-bufsize:{s}",
            str(rendition.bufsize),
        ]
        return args

    def gop_args(self, gop_frames: int, segment_seconds: int | None) -> list[str]:
        """Closed GOPs whose keyframes land on segment boundaries, so every rung cuts at the same
        instants and players can switch between them at any segment."""
        args = ["-g", str(gop_frames), "-keyint_min", str(gop_frames), "-sc_threshold", "0"]
        if segment_seconds:
            args += ["-force_key_frames", keyframe_expression(segment_seconds)]
        # The hardware encoders make forced keyframes plain I-frames unless told to use IDR.
        if self.backend == "nvenc":
            args += ["-no-scenecut", "1", "-forced-idr", "1"]
        elif self.backend == "qsv":
            args += ["-forced_idr", "1"]
        return args


def _gpu_can_decode(backend: Backend, info: MediaInfo) -> bool:
    video = info.video
    if video is None or video.rotation:
        # ffmpeg's autorotate inserts CPU filters (transpose) that cannot take GPU frames.
        return False
    if video.pix_fmt not in _HW_PIXEL_FORMATS:
        return False
    if backend == "qsv":
        return video.codec in _QSV_DECODERS
    return video.codec in _HW_DECODABLE


def video_pipeline(backend: Backend, info: MediaInfo, *, vaapi_device: str | None = None) -> VideoPipeline:
    """The pipeline for encoding `info`'s first video stream on `backend`."""
    if backend == "cpu":
        return VideoPipeline("cpu")
    device = vaapi_device or DEFAULT_VAAPI_DEVICE
    if _gpu_can_decode(backend, info):
        video = info.video
        assert video is not None
        if backend == "nvenc":
            return VideoPipeline(backend, ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"])
        if backend == "vaapi":
            return VideoPipeline(
                backend,
                [
                    "-hwaccel",
                    "vaapi",
                    "-hwaccel_device",
                    device,
                    "-hwaccel_output_format",
                    "vaapi",
                    "-extra_hw_frames",
                    _EXTRA_HW_FRAMES,
                ],
            )
        return VideoPipeline(
            backend,
            [
                "-hwaccel",
                "qsv",
                "-hwaccel_output_format",
                "qsv",
                "-extra_hw_frames",
                _EXTRA_HW_FRAMES,
                "-c:v",
                _QSV_DECODERS[video.codec],
            ],
        )
    return upload_pipeline(backend, vaapi_device=device)


def upload_pipeline(backend: Backend, *, vaapi_device: str | None = None) -> VideoPipeline:
    """CPU decode, one upload to the device, GPU scale and encode."""
    device = vaapi_device or DEFAULT_VAAPI_DEVICE
    uses_device = ["-filter_hw_device", "gpu"]
    if backend == "nvenc":
        return VideoPipeline(backend, ["-init_hw_device", "cuda=gpu", *uses_device], "format=yuv420p,hwupload")
    if backend == "vaapi":
        return VideoPipeline(backend, ["-init_hw_device", f"vaapi=gpu:{device}", *uses_device], "format=nv12,hwupload")
    if backend == "qsv":
        return VideoPipeline(
            backend, ["-init_hw_device", "qsv=gpu", *uses_device], "format=nv12,hwupload=extra_hw_frames=64"
        )
    return VideoPipeline("cpu")


def smoke_test_args(backend: Backend, *, vaapi_device: str | None = None) -> list[str]:
    """ffmpeg arguments that encode one small frame on `backend`: a build can list an encoder
    whose driver or device is missing, and only an actual encode tells."""
    pipeline = upload_pipeline(backend, vaapi_device=vaapi_device)
    chain = ",".join(part for part in (pipeline.upload, pipeline.scale_filter(256, 144)) if part)
    return [
        *pipeline.input_args,
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=256x144:r=25:d=1",
        "-vf",
        chain,
        "-frames:v",
        "1",
        "-c:v",
        pipeline.encoder,
        "-f",
        "null",
        "-",
    ]
