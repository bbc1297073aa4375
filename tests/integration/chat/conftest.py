"""Fixtures for the chat client tests: the fake Twitch IRC server, a client factory with fast
timings, and a background event collector."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

# `tests.fakes` is imported as a package from the repository root; pytest only puts the
# conftest directories on sys.path (no `pythonpath` setting in pyproject).
_REPO_ROOT = str(Path(__file__).resolve().parents[3])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from reelhouse.archive.twitch.chat_delivery import ChatEvent  # noqa: E402
from reelhouse.archive.twitch.irc_client import TwitchChatClient, reconnect_backoff  # noqa: E402
from tests.fakes.twitch_irc import FakeTwitchIrcServer  # noqa: E402

# Short enough that reconnects take milliseconds; idle/pong stay long so that keepalive probes
# only happen in the tests that ask for them.
FAST_BACKOFF = reconnect_backoff(base=0.02, cap=0.2)


class EventCollector:
    """Drains a client's events() in the background, like a fast consumer would."""

    def __init__(self, client: TwitchChatClient) -> None:
        self.events: list[ChatEvent] = []
        self._client = client
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        async for event in self._client.events():
            self.events.append(event)

    def of_type(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, condition: Callable[[list[ChatEvent]], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self.events):
                await asyncio.sleep(0.005)

    async def finish(self) -> None:
        """After client.stop(): wait until the iterator has ended."""
        async with asyncio.timeout(5):
            await self._task


@pytest.fixture
async def irc_server() -> AsyncIterator[FakeTwitchIrcServer]:
    async with FakeTwitchIrcServer() as server:
        yield server


@pytest.fixture
async def make_client(irc_server: FakeTwitchIrcServer) -> AsyncIterator[Callable[..., TwitchChatClient]]:
    """Factory for clients pointed at the fake server, with fast timings; stopped at teardown."""
    clients: list[TwitchChatClient] = []

    def build(channels=("dallas",), **overrides) -> TwitchChatClient:
        settings = {
            "host": irc_server.host,
            "port": irc_server.port,
            "backoff": FAST_BACKOFF,
            "rng": random.Random(42),
            "connect_timeout": 2.0,
            "idle_timeout": 30.0,
            "pong_timeout": 5.0,
        }
        settings.update(overrides)
        client = TwitchChatClient(channels, **settings)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.stop()


@pytest.fixture
def collect() -> Callable[[TwitchChatClient], EventCollector]:
    return EventCollector
