"""Fake Twitch and YouTube servers on real sockets for the provider client tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.fakes` is imported as a package from the repository root; pytest only puts the
# conftest directories on sys.path (no `pythonpath` setting in pyproject).
_REPO_ROOT = str(Path(__file__).resolve().parents[3])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.fakes.helix import FakeTwitch  # noqa: E402
from tests.fakes.server import ServedApp, serve  # noqa: E402
from tests.fakes.youtube import FakeYouTube  # noqa: E402


@pytest.fixture
def twitch() -> FakeTwitch:
    return FakeTwitch()


@pytest.fixture
def twitch_server(twitch: FakeTwitch) -> Iterator[ServedApp]:
    with serve(twitch.app) as served:
        yield served


@pytest.fixture
def youtube(tmp_path: Path) -> FakeYouTube:
    return FakeYouTube(storage_dir=tmp_path / "youtube")


@pytest.fixture
def youtube_server(youtube: FakeYouTube) -> Iterator[ServedApp]:
    with serve(youtube.app) as served:
        yield served
