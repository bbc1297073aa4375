"""One connection, many channels: joins, keepalive, RECONNECT, typed events, slow consumers."""

from __future__ import annotations

import asyncio

from reelhouse.archive.twitch.chat_delivery import Gap
from reelhouse.archive.twitch.chat_events import (
    ChatMessage,
    ClearChat,
    ClearMsg,
    Notice,
    RoomState,
    UserNotice,
)
from reelhouse.archive.twitch.irc_client import reconnect_backoff
from reelhouse.archive.twitch.irc_message import IrcMessage
from tests.fakes.twitch_irc import load_corpus


async def test_many_channels_on_one_connection(irc_server, make_client, collect):
    client = make_client(["Alpha", "#beta", "gamma"])
    events = collect(client)
    await client.start()
    await client.wait_until_joined(timeout=5)
    conn = await irc_server.wait_until_joined(["alpha", "beta", "gamma"])
    assert len(irc_server.connections) == 1
    assert [line for line in conn.received if line.startswith("JOIN")] == ["JOIN #alpha,#beta,#gamma"]
    sent = [await irc_server.send_privmsg(channel, f"hi {channel}") for channel in ("gamma", "alpha", "beta")]
    await events.wait_for(lambda evs: len([e for e in evs if isinstance(e, ChatMessage)]) == 3)
    received = [(m.channel, m.text, m.message_id) for m in events.of_type(ChatMessage)]
    assert received == [(s.channel, s.text, s.message_id) for s in sent]
    assert {r.channel for r in events.of_type(RoomState)} == {"alpha", "beta", "gamma"}


async def test_joins_are_paced_in_batches(irc_server, make_client):
    channels = [f"chan{i}" for i in range(5)]
    client = make_client(channels, join_batch_size=2, join_window=0.15)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.start()
    conn = await irc_server.wait_until_joined(channels)
    elapsed = loop.time() - started
    joins = [line for line in conn.received if line.startswith("JOIN")]
    assert joins == ["JOIN #chan0,#chan1", "JOIN #chan2,#chan3", "JOIN #chan4"]
    assert elapsed >= 2 * 0.15


async def test_join_and_part_while_connected(irc_server, make_client, collect):
    client = make_client(["dallas"])
    events = collect(client)
    await client.start()
    await client.wait_until_joined(timeout=5)
    await client.join("#NewChannel")
    conn = await irc_server.wait_until_joined(["dallas", "newchannel"])
    await client.wait_until_joined(timeout=5)
    await client.part("dallas")
    async with asyncio.timeout(5):
        while "dallas" in conn.joined:
            await asyncio.sleep(0.005)
    await irc_server.send_privmsg("dallas", "nobody hears this")
    await irc_server.send_privmsg("newchannel", "welcome")
    await events.wait_for(lambda evs: any(isinstance(e, ChatMessage) for e in evs))
    assert [m.channel for m in events.of_type(ChatMessage)] == ["newchannel"]
    assert client.channels == {"newchannel"}


async def test_server_ping_is_answered_with_pong(irc_server, make_client):
    client = make_client(["dallas"])
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    assert await irc_server.send_ping("tmi.twitch.tv")
    assert await irc_server.send_ping("custom-origin-42")
    assert client.stats.reconnections == 0


async def test_idle_connection_is_probed_and_a_dead_one_replaced(irc_server, make_client, collect):
    client = make_client(["dallas"], idle_timeout=0.2, pong_timeout=0.2)
    events = collect(client)
    await client.start()
    first = await irc_server.wait_until_joined(["dallas"])
    await asyncio.sleep(0.3)
    # A live connection answers the probe and stays.
    assert "PING :tmi.twitch.tv" in first.received
    assert len(irc_server.connections) == 1
    irc_server.silence_clients()  # half-open: nothing comes back any more
    await irc_server.wait_for_connections(2, timeout=3)
    await irc_server.wait_until_joined(["dallas"])
    await events.wait_for(lambda evs: any(isinstance(e, Gap) for e in evs))
    (gap,) = events.of_type(Gap)
    assert gap.channel == "dallas" and "no reply to PING" in gap.reason
    # The gap starts at the last line the dead connection delivered, before the silence.
    assert gap.started_at <= irc_server.connections[1].connected_at <= gap.ended_at
    assert client.reconnections == 1
    await irc_server.send_privmsg("dallas", "back again")
    await events.wait_for(lambda evs: any(isinstance(e, ChatMessage) for e in evs))


async def test_reconnect_command_reconnects_without_backoff(irc_server, make_client, collect):
    # A backoff this long would fail the test if RECONNECT went through it.
    client = make_client(["dallas", "beta"], backoff=reconnect_backoff(base=30.0, cap=30.0))
    events = collect(client)
    await client.start()
    first = await irc_server.wait_until_joined(["dallas", "beta"])
    await irc_server.send_reconnect()
    async with asyncio.timeout(2):
        second = await irc_server.wait_for_connections(2)
        await irc_server.wait_until_joined(["dallas", "beta"])
    assert second is not first
    async with asyncio.timeout(2):
        while first.live:  # the client closed the old connection itself
            await asyncio.sleep(0.005)
    await events.wait_for(lambda evs: len([e for e in evs if isinstance(e, Gap)]) == 2)
    gaps = events.of_type(Gap)
    assert {g.channel for g in gaps} == {"dallas", "beta"}
    assert all(g.reason == "server requested reconnect" for g in gaps)
    assert client.reconnections == 1


async def test_corpus_lines_arrive_as_typed_events(irc_server, make_client, collect):
    corpus = load_corpus()
    client = make_client(["dallas"])
    events = collect(client)
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    for name, line in corpus.items():
        if name != "reconnect":  # would end the session; covered by its own test
            await irc_server.send_raw(line)
    await irc_server.send_privmsg("dallas", "end marker")
    await events.wait_for(lambda evs: any(isinstance(e, ChatMessage) and e.text == "end marker" for e in evs))
    kinds = [type(e) for e in events.events]
    assert kinds.count(ChatMessage) == 9  # 8 corpus PRIVMSGs + the marker
    assert kinds.count(UserNotice) == 4
    assert kinds.count(ClearChat) == 3 and kinds.count(ClearMsg) == 1
    assert kinds.count(Notice) == 2
    generic = {e.command for e in events.events if isinstance(e, IrcMessage)}
    # Protocol chatter (PING, RECONNECT, CAP, numerics, JOIN) is handled by the client itself.
    assert generic == {"GLOBALUSERSTATE", "USERSTATE", "WHISPER"}
    assert kinds.count(RoomState) == 4  # 3 corpus lines + the one after our JOIN
    assert client.stats.parse_errors == 0 and client.reconnections == 0


async def test_slow_consumer_makes_the_client_drop_not_stall(irc_server, make_client):
    client = make_client(["dallas"], queue_size=10)
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    # Nobody reads events(): the buffer holds ROOMSTATE + 9 messages, the rest is dropped.
    await irc_server.broadcast_burst(200, ["dallas"], lines_per_drain=50)
    assert await irc_server.send_ping("still-reading")  # the socket reader was never blocked
    assert client.dropped == 200 - 9
    received = []
    async for event in client.events():
        received.append(event)
        if len(received) == 10:
            break
    assert isinstance(received[0], RoomState)
    assert [m.text for m in received[1:]] == [f"burst message {i} in #dallas PogChamp" for i in range(9)]


async def test_events_waiting_too_long_are_counted_late(irc_server, make_client):
    client = make_client(["dallas"], late_after=0.05)
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    await irc_server.broadcast_burst(5, ["dallas"])
    await irc_server.send_ping()  # all 5 lines are read by now
    await asyncio.sleep(0.1)
    taken = 0
    async for _ in client.events():
        taken += 1
        if taken == 6:
            break
    assert client.late == 6 and client.dropped == 0


async def test_unparseable_and_oversized_lines(irc_server, make_client, collect):
    client = make_client(["dallas"])
    events = collect(client)
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    await irc_server.send_raw("@tags-but-no-command")
    await irc_server.send_privmsg("dallas", "still fine")
    await events.wait_for(lambda evs: any(isinstance(e, ChatMessage) for e in evs))
    assert client.stats.parse_errors == 1 and client.reconnections == 0
    # Past the reader's 64 KiB limit the stream cannot be trusted: start over.
    await irc_server.send_raw("PRIVMSG #dallas :" + "x" * 70_000)
    await irc_server.wait_for_connections(2)
    await irc_server.wait_until_joined(["dallas"])
    await events.wait_for(lambda evs: any(isinstance(e, Gap) for e in evs))
    assert events.of_type(Gap)[0].reason == "line longer than 65536 bytes"
