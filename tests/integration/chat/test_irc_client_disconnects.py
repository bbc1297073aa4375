"""Abrupt disconnects under load: nothing delivered is lost or doubled, and every message that
could not be delivered lies inside a reported Gap."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import timedelta

from reelhouse.archive.twitch.chat_delivery import Gap
from reelhouse.archive.twitch.chat_events import ChatMessage
from reelhouse.archive.twitch.irc_client import reconnect_backoff
from tests.fakes.twitch_irc import FakeTwitchIrcServer

CHANNELS = ["alpha", "beta", "gamma"]
TOTAL_MESSAGES = 20_000
DROPS = 5


async def test_five_drops_during_a_20k_burst(irc_server, make_client, collect):
    client = make_client(CHANNELS, queue_size=TOTAL_MESSAGES + 100)
    events = collect(client)
    await client.start()
    await irc_server.wait_until_joined(CHANNELS)

    # 200 chunks of 100 lines with a short pause: a few thousand lines per second, so that
    # each reconnect (backoff + login + join) misses a few hundred of them.
    burst = asyncio.create_task(irc_server.broadcast_burst(TOTAL_MESSAGES, CHANNELS, lines_per_drain=100, pause=0.01))
    for _ in range(DROPS):
        # Count progress in messages, not seconds, so a slow machine still drops mid-burst.
        mark = len(irc_server.sent)
        while len(irc_server.sent) < mark + 2_000 and not burst.done():
            await asyncio.sleep(0.005)
        assert not burst.done(), "the burst ended before all drops happened"
        await irc_server.drop_clients()
        await irc_server.wait_until_joined(CHANNELS, timeout=5)
    sent = await burst

    delivered = [m for m in sent if m.delivered]
    lost_in_transit = [m for m in sent if not m.delivered]
    await events.wait_for(lambda evs: sum(isinstance(e, ChatMessage) for e in evs) >= len(delivered), timeout=30)
    await asyncio.sleep(0.2)  # a duplicate would show up now

    received = events.of_type(ChatMessage)
    # Exactly once, in order: every line the server put on the wire while the client was there.
    assert [m.message_id for m in received] == [m.message_id for m in delivered]
    assert [(m.channel, m.text) for m in received] == [(m.channel, m.text) for m in delivered]
    # The scenario really tested something: traffic on all six connections, and real holes.
    assert {number for m in delivered for number in m.delivered_to} == {1, 2, 3, 4, 5, 6}
    assert len(lost_in_transit) > 0
    assert client.reconnections == DROPS
    assert client.dropped == 0

    gaps = events.of_type(Gap)
    for channel in CHANNELS:
        channel_gaps = sorted((g for g in gaps if g.channel == channel), key=lambda g: g.started_at)
        assert len(channel_gaps) == DROPS
        for drop_number, (gap, dropped_at) in enumerate(zip(channel_gaps, irc_server.drops, strict=True)):
            old, new = irc_server.connections[drop_number], irc_server.connections[drop_number + 1]
            assert old.connected_at <= gap.started_at <= dropped_at <= gap.ended_at
            assert new.join_times[channel] <= gap.ended_at < dropped_at + timedelta(seconds=5)
            assert gap.reason == "connection closed by server"
        # Missing time is visible: each message that never reached the client is inside a gap.
        for message in (m for m in lost_in_transit if m.channel == channel):
            assert any(g.started_at <= message.sent_at <= g.ended_at for g in channel_gaps), message


async def test_stop_reports_a_gap_that_never_closed(irc_server, make_client, collect):
    client = make_client(["dallas"], backoff=reconnect_backoff(base=30.0, cap=30.0))
    events = collect(client)
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    await irc_server.drop_clients()
    await asyncio.sleep(0.1)  # the client is now waiting out its (long) backoff
    await client.stop()
    await events.finish()
    (gap,) = events.of_type(Gap)
    assert gap.channel == "dallas"
    assert gap.started_at <= irc_server.drops[0] <= gap.ended_at
    assert gap.reason == "connection closed by server; client stopped before rejoining"


async def test_reconnect_attempts_follow_the_seeded_backoff(make_client):
    policy = reconnect_backoff(base=0.05, cap=0.4)
    schedule_rng = random.Random(99)
    expected = [policy.delay(attempt, schedule_rng) for attempt in range(1, 6)]
    # Every login is refused, so each attempt is one connection and one backoff step.
    async with FakeTwitchIrcServer(accepted_tokens={"other-token"}) as server:
        client = make_client(
            ["dallas"],
            token="refused",
            nick="mybot",
            host=server.host,
            port=server.port,
            backoff=policy,
            rng=random.Random(99),
        )
        await client.start()
        await server.wait_for_connections(6, timeout=10)
    starts = [conn.connected_at for conn in server.connections[:6]]
    waits = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    for waited, delay in zip(waits, expected, strict=True):
        # Lower bound: the client slept at least the drawn delay; the rest is login round trips.
        assert delay - 0.01 <= waited <= delay + 0.25
    assert client.stats.connect_failures >= 5 and client.reconnections == 0
