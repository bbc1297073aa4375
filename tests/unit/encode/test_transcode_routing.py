"""HW_ACCEL naming a backend routes the transcode to workers whose test encode passed with it."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from reelhouse.encode.pipeline import KIND_PROBE, KIND_TRANSCODE, EncodePipeline


def pipeline(hw_accel: str, nats_url: str = "nats://127.0.0.1:4222") -> EncodePipeline:
    conf = SimpleNamespace(max_attempts=3, fetch_timeout=timedelta(hours=1), transcode_timeout=timedelta(hours=2))
    media = SimpleNamespace(hw_accel=hw_accel)
    settings = SimpleNamespace(media=media, jobs=SimpleNamespace(nats_url=nats_url))
    service = SimpleNamespace(settings=conf, runtime=SimpleNamespace(settings=settings))
    return EncodePipeline(service)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hw_accel", "capability"),
    [("nvenc", "h264_nvenc"), ("vaapi", "h264_vaapi"), ("qsv", "h264_qsv"), ("auto", None), ("none", None)],
)
def test_transcode_requires_the_named_hardware_encoder(hw_accel: str, capability: str | None) -> None:
    options = pipeline(hw_accel).follow_up_options(KIND_TRANSCODE)
    assert options.get("required_capability") == capability
    assert "required_capability" not in pipeline(hw_accel).follow_up_options(KIND_PROBE)


def test_without_nats_a_named_backend_still_falls_back_on_the_worker() -> None:
    assert "required_capability" not in pipeline("nvenc", nats_url="").follow_up_options(KIND_TRANSCODE)
