"""What this worker's ffmpeg can encode with, and which backend a job should use.

`ffmpeg -encoders` lists what the build was compiled with (Debian's ffmpeg lists h264_nvenc
and h264_vaapi on machines with no GPU at all), so each hardware encoder that is listed is also
tried on one frame before it is advertised. WebEncode stopped at the listing and never used
the result; here the result picks the encoder in `ladder.py`.
"""

from __future__ import annotations

import asyncio
import glob
import logging
from dataclasses import dataclass

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.media.encoders import (
    H264_ENCODERS,
    HARDWARE_BACKENDS,
    Backend,
    smoke_test_args,
)
from reelhouse.core.media.process import run_tool

log = logging.getLogger(__name__)

SMOKE_TEST_TIMEOUT = 20.0
# hwaccel each hardware encoder needs present in `ffmpeg -hwaccels`
_REQUIRED_HWACCEL: dict[Backend, str] = {"nvenc": "cuda", "vaapi": "vaapi", "qsv": "qsv"}
_INTERESTING_ENCODERS = {
    "libx264",
    "libx265",
    "aac",
    "libopus",
    "libvpx-vp9",
    "libsvtav1",
    "h264_nvenc",
    "hevc_nvenc",
    "h264_vaapi",
    "hevc_vaapi",
    "h264_qsv",
    "hevc_qsv",
}
_HARDWARE_ENCODER_NAMES = {name for backend, name in H264_ENCODERS.items() if backend != "cpu"} | {
    "hevc_nvenc",
    "hevc_vaapi",
    "hevc_qsv",
}


@dataclass(frozen=True)
class HwCapabilities:
    compiled_encoders: frozenset[str]
    """Every encoder the ffmpeg build lists."""
    hwaccels: tuple[str, ...]
    usable_backends: tuple[Backend, ...]
    """Hardware H.264 backends that encoded a test frame on this machine, preferred first."""
    vaapi_device: str | None = None

    def capability_list(self) -> list[str]:
        """What a worker advertises, e.g. ['cpu', 'libx264', 'aac', 'h264_nvenc']."""
        software = sorted(
            name for name in self.compiled_encoders & _INTERESTING_ENCODERS if name not in _HARDWARE_ENCODER_NAMES
        )
        hardware = [H264_ENCODERS[backend] for backend in self.usable_backends]
        return ["cpu", *software, *hardware]


def parse_encoder_list(text: str) -> frozenset[str]:
    """Names from `ffmpeg -encoders`: lines like ' V....D libx264   libx264 H.264 ...'."""
    names: set[str] = set()
    past_legend = False
    for line in text.splitlines():
        if line.strip().startswith("------"):
            past_legend = True
            continue
        parts = line.split()
        if past_legend and len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def parse_hwaccel_list(text: str) -> tuple[str, ...]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].lower().startswith("hardware acceleration methods"):
        lines = lines[1:]
    return tuple(lines)


def find_render_device() -> str | None:
    devices = sorted(glob.glob("/dev/dri/renderD*"))
    return devices[0] if devices else None


async def _encodes_a_frame(settings: MediaSettings, backend: Backend, vaapi_device: str | None) -> bool:
    argv = [
        settings.ffmpeg_path,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *smoke_test_args(backend, vaapi_device=vaapi_device),
    ]
    try:
        output = await asyncio.wait_for(run_tool(argv), SMOKE_TEST_TIMEOUT)
    except TimeoutError:
        log.warning("%s test encode timed out; not using it", H264_ENCODERS[backend])
        return False
    if output.returncode != 0:
        # Expected on most machines (no GPU): say so only at debug, in one line.
        last_line = (output.stderr_text.strip().splitlines() or [""])[-1][:200]
        log.debug("%s listed but unusable here: %s", H264_ENCODERS[backend], last_line)
    return output.returncode == 0


async def probe_capabilities(settings: MediaSettings) -> HwCapabilities:
    """Detect without caching (use `detect_capabilities` in workers)."""
    tool = [settings.ffmpeg_path, "-hide_banner", "-nostdin"]
    encoders_output, hwaccels_output = await asyncio.gather(
        run_tool([*tool, "-encoders"]), run_tool([*tool, "-hwaccels"])
    )
    encoders = parse_encoder_list(encoders_output.stdout.decode("utf-8", errors="replace"))
    hwaccels = parse_hwaccel_list(hwaccels_output.stdout.decode("utf-8", errors="replace"))
    render_device = find_render_device()
    usable: list[Backend] = []
    for backend in HARDWARE_BACKENDS:
        if H264_ENCODERS[backend] not in encoders or _REQUIRED_HWACCEL[backend] not in hwaccels:
            continue
        if backend == "vaapi" and render_device is None:
            continue
        if await _encodes_a_frame(settings, backend, render_device):
            usable.append(backend)
    return HwCapabilities(
        compiled_encoders=encoders, hwaccels=hwaccels, usable_backends=tuple(usable), vaapi_device=render_device
    )


_cache: dict[str, HwCapabilities] = {}


async def detect_capabilities(settings: MediaSettings | None = None, *, refresh: bool = False) -> HwCapabilities:
    """Capabilities of the configured ffmpeg, detected once per process (test encodes take a
    second or two and the hardware does not change under a running worker)."""
    settings = settings or get_settings().media
    if refresh or settings.ffmpeg_path not in _cache:
        _cache[settings.ffmpeg_path] = await probe_capabilities(settings)
    return _cache[settings.ffmpeg_path]


def select_backend(capabilities: HwCapabilities, hw_accel: str) -> Backend:
    """Apply HW_ACCEL: 'none' forces libx264, 'auto' takes the first usable hardware backend,
    a named backend is used when usable and otherwise falls back to libx264 with a warning."""
    if hw_accel == "none":
        return "cpu"
    if hw_accel == "auto":
        return capabilities.usable_backends[0] if capabilities.usable_backends else "cpu"
    for backend in capabilities.usable_backends:
        if backend == hw_accel:
            return backend
    log.warning("HW_ACCEL=%s but h264_%s is not usable on this worker; encoding with libx264", hw_accel, hw_accel)
    return "cpu"
