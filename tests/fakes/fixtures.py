"""Pytest fixtures that serve the Twitch and YouTube fakes on loopback (loaded by the root
conftest, so every test folder uses the same ones)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.helix import FakeTwitch
from tests.fakes.server import ServedApp, serve
from tests.fakes.youtube import FakeYouTube


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
