"""Clips shared by the media integration tests, generated once per session with ffmpeg."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# `tests/` is not a package (test files are collected by path), so make media_fixtures importable.
_TESTS_DIR = Path(__file__).resolve().parents[2]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import media_fixtures  # noqa: E402
from reelhouse.config import MediaSettings  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _require_ffmpeg() -> None:
    # The design rule: a missing real component fails the run, it is never skipped.
    for tool in (media_fixtures.FFMPEG, media_fixtures.FFPROBE):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required for the media tests (apt-get install ffmpeg)")


@pytest.fixture()
def media_settings() -> MediaSettings:
    # HW_ACCEL=none: these tests pin the CPU path; hardware selection has its own tests.
    return MediaSettings(hw_accel="none", progress_save_interval=0.2)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def av_clip(clip_dir: Path) -> Path:
    return media_fixtures.make_clip(clip_dir / "av.mp4", width=320, height=240, duration=2.0, fps=30)


@pytest.fixture(scope="session")
def silent_clip(clip_dir: Path) -> Path:
    return media_fixtures.make_clip(clip_dir / "silent.mp4", width=320, height=240, duration=2.0, audio=False)


@pytest.fixture(scope="session")
def vfr_clip(clip_dir: Path) -> Path:
    return media_fixtures.make_vfr_clip(clip_dir / "vfr.mp4")


@pytest.fixture(scope="session")
def rotated_clip(clip_dir: Path) -> Path:
    return media_fixtures.make_rotated_clip(clip_dir / "rotated.mp4", rotation=90, width=320, height=240)


@pytest.fixture(scope="session")
def audio_only_clip(clip_dir: Path) -> Path:
    return media_fixtures.make_audio_only_clip(clip_dir / "tone.m4a")


@pytest.fixture(scope="session")
def truncated_mp4(clip_dir: Path) -> Path:
    return media_fixtures.make_truncated_mp4(clip_dir / "truncated.mp4")


@pytest.fixture(scope="session")
def partial_mp4(clip_dir: Path) -> Path:
    return media_fixtures.make_partial_mp4(clip_dir / "partial.mp4")


@pytest.fixture(scope="session")
def garbage_header_file(clip_dir: Path) -> Path:
    return media_fixtures.make_garbage_header_file(clip_dir / "garbage.mp4")


@pytest.fixture(scope="session")
def clip_480p(clip_dir: Path) -> Path:
    return media_fixtures.make_clip(clip_dir / "480p.mp4", width=854, height=480, duration=3.0, fps=25)
