"""Hardware detection against this machine's real ffmpeg."""

from __future__ import annotations

import glob

from reelhouse.config import MediaSettings
from reelhouse.core.media import hw
from reelhouse.core.media.encoders import H264_ENCODERS, smoke_test_args
from reelhouse.core.media.ffmpeg import run_ffmpeg


async def test_capabilities_list_only_encoders_that_work_here() -> None:
    settings = MediaSettings()
    capabilities = await hw.detect_capabilities(settings, refresh=True)

    listed = capabilities.capability_list()
    assert listed[0] == "cpu"
    assert "libx264" in listed and "aac" in listed
    assert "libx264" in capabilities.compiled_encoders
    # Debian's build lists NVENC/VAAPI/QSV whatever the hardware; only working ones are advertised.
    for backend in capabilities.usable_backends:
        assert H264_ENCODERS[backend] in listed
    if not glob.glob("/dev/nvidia*"):
        assert "h264_nvenc" not in listed
    if not glob.glob("/dev/dri/renderD*"):
        assert "h264_vaapi" not in listed and "h264_qsv" not in listed


async def test_detection_is_cached_per_process() -> None:
    settings = MediaSettings()
    first = await hw.detect_capabilities(settings)
    assert await hw.detect_capabilities(settings) is first
    assert await hw.detect_capabilities(settings, refresh=True) is not first


async def test_the_smoke_test_command_really_encodes_on_the_cpu_backend() -> None:
    # The hardware variants cannot run here; the CPU one proves the command shape is valid.
    result = await run_ffmpeg(smoke_test_args("cpu"), settings=MediaSettings())
    assert result.last_progress is not None and result.last_progress.frame == 1
