"""Acceptance: 200,000 messages over 3 channels from the fake Twitch IRC server, with 5 forced
disconnects in the middle of the traffic. Every message the server delivered is stored exactly
once, every disconnect left a gap per channel, and replay returns each channel's chat in the
order the server sent it."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select

from reelhouse.archive.chat.recorder import ChatRecorder
from reelhouse.archive.chat.writer import ChatWriter
from reelhouse.archive.models import chat_gaps, chat_messages
from reelhouse.archive.store.chat import iter_rows
from reelhouse.archive.twitch.irc_message import parse_line
from tests.fakes.twitch_irc import FakeTwitchIrcServer
from tests.integration.chat_store.conftest import T0, make_vod, scalar, wait_for
from tests.integration.chat_store.irc_process import IrcServerProcess, render_burst

CHANNELS = ["alpha", "bravo", "charlie"]
TOTAL = 200_000
DROPS = 5


@pytest.mark.slow
async def test_200k_messages_with_5_disconnects_stored_exactly_once(engine, make_client):
    for channel in CHANNELS:
        await make_vod(engine, f"vod-{channel}", channel=channel)
    async with IrcServerProcess() as irc:
        client = make_client(CHANNELS, host=irc.host, port=irc.port, queue_size=100_000, late_after=60.0)
        writer = ChatWriter(engine, batch_size=2000, flush_interval=0.25, queue_size=TOTAL)
        recorder = ChatRecorder(client, writer)
        for channel in CHANNELS:
            recorder.bind(channel, f"vod-{channel}", T0)
        await writer.start()
        await irc.prepare(TOTAL, CHANNELS)
        await client.start()
        await client.wait_until_joined(timeout=5)
        consuming = asyncio.create_task(recorder.run())
        started = time.monotonic()
        # Traffic in chunks; DROPS of them are cut in the middle: the connection is dropped
        # while the burst runs, and the rest of that chunk goes to nobody until the client is
        # back (so "delivered" is a strict subset of "sent").
        chunk = 5000
        drop_chunks = {int((i + 1) * TOTAL / chunk / (DROPS + 1)) for i in range(DROPS)}
        for index in range(TOTAL // chunk):
            dropping = index in drop_chunks
            await irc.blast(chunk, drop_after=chunk // 2 if dropping else None)
            if dropping:
                await irc.wait_until_joined(CHANNELS)
                await client.wait_until_joined(timeout=10)
        assert await irc.sent_count() == TOTAL
        delivered = await irc.delivered()
        assert TOTAL - DROPS * chunk // 2 <= len(delivered) < TOTAL
        await wait_for(lambda: writer.written >= len(delivered), timeout=120, interval=0.05)
        await client.stop()
        await consuming
        await writer.stop()
        elapsed = time.monotonic() - started

    stored = await scalar(engine, select(func.count()).select_from(chat_messages))
    distinct = await scalar(engine, select(func.count(func.distinct(chat_messages.c.message_id))))
    assert stored == distinct == len(delivered)
    async with engine.connect() as conn:
        stored_ids = set((await conn.execute(select(chat_messages.c.message_id))).scalars())
        gaps = (await conn.execute(select(chat_gaps.c.channel, chat_gaps.c.vod_id))).all()
    assert stored_ids == {message_id for message_id, _ in delivered}
    assert client.stats.dropped == 0 and writer.dropped == 0 and writer.rejected == 0
    assert client.reconnections == DROPS
    assert sorted(gaps) == sorted((c, f"vod-{c}") for c in CHANNELS for _ in range(DROPS))

    for channel in CHANNELS:
        expected = [message_id for message_id, sent_to in delivered if sent_to == channel]
        replayed = [row async for row in iter_rows(engine, f"vod-{channel}", page_size=5000)]
        assert [row.message_id for row in replayed] == expected
        rels = [row.rel_timestamp for row in replayed]
        assert rels == sorted(rels)
    print(
        f"\n{stored} stored of {TOTAL} sent in {elapsed:.1f}s ({stored / elapsed:,.0f} msgs/s), "
        f"{writer.batches} batches, {DROPS} drops"
    )


async def test_pre_rendered_bursts_match_the_fake_servers_own_lines():
    """The ingest test's pre-rendered lines are the fake's broadcast_burst lines, field for field."""
    async with FakeTwitchIrcServer() as server:
        await server.broadcast_burst(1, ["alpha"])
        own = parse_line(server.sent[0].line)
    rendered = parse_line(render_burst(1, ["alpha"])[0][3])
    assert list(rendered.tags) == list(own.tags)
    assert {k: v for k, v in rendered.tags.items() if k not in ("id", "tmi-sent-ts")} == {
        k: v for k, v in own.tags.items() if k not in ("id", "tmi-sent-ts")
    }
    assert (rendered.command, rendered.params, rendered.trailing, rendered.prefix) == (
        own.command,
        own.params,
        own.trailing,
        own.prefix,
    )
