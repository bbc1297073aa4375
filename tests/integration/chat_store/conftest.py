"""Fixtures for the chat storage tests: an engine on each backend (from tests/conftest.py), the
fake Twitch IRC server, and helpers to create VOD rows and count what was stored."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from reelhouse.archive.chat.recorder import ChatRecorder
from reelhouse.archive.chat.writer import ChatWriter
from reelhouse.archive.models import chat_gaps, chat_messages
from reelhouse.archive.store.chat import ensure_vod
from reelhouse.archive.twitch.irc_client import TwitchChatClient, reconnect_backoff
from tests.fakes.twitch_irc import FakeTwitchIrcServer

FAST_BACKOFF = reconnect_backoff(base=0.02, cap=0.2)
T0 = datetime(2024, 5, 1, 18, 0, tzinfo=UTC)


@pytest.fixture
async def irc_server() -> AsyncIterator[FakeTwitchIrcServer]:
    async with FakeTwitchIrcServer() as server:
        yield server


@pytest.fixture
async def make_client(irc_server) -> AsyncIterator[Callable[..., TwitchChatClient]]:
    clients: list[TwitchChatClient] = []

    def build(channels=("dallas",), **overrides) -> TwitchChatClient:
        options = {
            "host": irc_server.host,
            "port": irc_server.port,
            "backoff": FAST_BACKOFF,
            "rng": random.Random(7),
            "connect_timeout": 2.0,
            "idle_timeout": 30.0,
            "pong_timeout": 5.0,
        }
        options.update(overrides)
        client = TwitchChatClient(channels, **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.stop()


async def make_vod(engine, vod_id: str, channel: str = "dallas", started_at: datetime = T0, **kwargs) -> None:
    await ensure_vod(engine, vod_id, channel=channel, started_at=started_at, **kwargs)


async def start_recording(
    client: TwitchChatClient, writer: ChatWriter, channel: str, vod_id: str
) -> tuple[ChatRecorder, asyncio.Task[None]]:
    """A recorder binding `channel` to `vod_id`, running with its writer and a joined client."""
    recorder = ChatRecorder(client, writer)
    recorder.bind(channel, vod_id, T0)
    await writer.start()
    await client.start()
    await client.wait_until_joined(timeout=5)
    return recorder, asyncio.create_task(recorder.run())


async def scalar(engine, query):
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar_one()


async def count_messages(engine, **filters) -> int:
    query = select(func.count()).select_from(chat_messages)
    for column, value in filters.items():
        query = query.where(chat_messages.c[column] == value)
    return await scalar(engine, query)


async def count_gaps(engine, **filters) -> int:
    query = select(func.count()).select_from(chat_gaps)
    for column, value in filters.items():
        query = query.where(chat_gaps.c[column] == value)
    return await scalar(engine, query)


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(interval)


async def seed_chat(
    engine, vod_id: str, rels: list[float], *, channel: str = "dallas", started_at: datetime = T0, prefix: str = "m"
) -> list[str]:
    """Store one message per entry of `rels` (seconds after `started_at`) through the writer;
    returns their message ids in order."""
    from reelhouse.archive.chat.rows import build_row
    from reelhouse.archive.chat.writer import ChatWriter
    from reelhouse.archive.twitch.chat_events import parse_event

    await make_vod(engine, vod_id, channel=channel, started_at=started_at)
    ids = []
    async with ChatWriter(engine, batch_size=5000, flush_interval=0.05, queue_size=len(rels) + 1) as writer:
        for index, rel in enumerate(rels):
            message_id = f"{prefix}-{index:06d}"
            sent = round((started_at.timestamp() + rel) * 1000)
            line = (
                f"@badges=subscriber/6;color=#FF0000;display-name=User{index % 50};emotes=;id={message_id};"
                f"tmi-sent-ts={sent};user-id={index % 50} :user{index % 50}!u@u.tmi.twitch.tv "
                f"PRIVMSG #{channel} :message number {index}"
            )
            writer.submit(build_row(parse_event(line), vod_id, started_at.timestamp()))
            ids.append(message_id)
        await writer.flush(timeout=120)
    return ids
