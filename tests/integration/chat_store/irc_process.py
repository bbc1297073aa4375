"""The fake Twitch IRC server in a child process, driven over a pipe, with pre-rendered bursts.

At 200,000 messages the fake's own work (building tagged lines) costs more CPU than the code
under test. So the lines of a burst are rendered before it starts (`prepare`), in the fake's
own format, and `blast` only writes them; and the server runs in another process, so even that
does not compete with the client and the writer for the test's event loop. The server keeps
its ground truth (what it delivered, to whom, in order) and hands it back on request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.twitch_irc import SERVER, FakeTwitchIrcServer, SentMessage, room_id_for

Prepared = list[tuple[str, str, str, str]]  # (message_id, channel, text, line)


def render_burst(count: int, channels: Sequence[str], start: int = 0) -> Prepared:
    """PRIVMSG lines as FakeTwitchIrcServer.broadcast_burst writes them (same tags, same order),
    with tmi-sent-ts taken now: the burst is sent right after, in this order. The values need no
    escaping, so the line is filled in directly instead of through format_line's checks."""
    sent_ms = str(int(datetime.now(UTC).timestamp() * 1000))
    rooms = {channel: room_id_for(channel) for channel in channels}
    lines: Prepared = []
    for index in range(start, start + count):
        channel = channels[index % len(channels)]
        login = f"viewer{index % 97}"
        message_id = str(uuid.uuid4())
        text = f"burst message {index} in #{channel} PogChamp"
        line = (
            f"@badge-info=;badges=;color=#1E90FF;display-name={login.capitalize()};emotes=;first-msg=0;flags=;"
            f"id={message_id};mod=0;returning-chatter=0;room-id={rooms[channel]};subscriber=0;"
            f"tmi-sent-ts={sent_ms};turbo=0;user-id={zlib.crc32(login.encode()) % 1_000_000_000};user-type= "
            f":{login}!{login}@{login}.{SERVER} PRIVMSG #{channel} :{text}"
        )
        lines.append((message_id, channel, text, line))
    return lines


async def blast(server: FakeTwitchIrcServer, lines: Prepared, lines_per_drain: int, drop_after: int | None) -> None:
    """Write prepared lines to every live, joined connection, draining every `lines_per_drain`
    (so the client's reading paces the server, as TCP does); cut all connections once
    `drop_after` lines went out. Recorded in `server.sent` like the fake's own bursts."""
    for start in range(0, len(lines), lines_per_drain):
        if drop_after is not None and start >= drop_after:
            await server.drop_clients()
            drop_after = None
        now = datetime.now(UTC)
        live = [c for c in server.live_connections if c.welcomed]
        outgoing: dict[int, list[str]] = {c.number: [] for c in live}
        for message_id, channel, text, line in lines[start : start + lines_per_drain]:
            recipients = tuple(c.number for c in live if channel in c.joined)
            for number in recipients:
                outgoing[number].append(line)
            server.sent.append(SentMessage(message_id, channel, text, line, now, recipients))
        for conn in live:
            conn.write_lines(outgoing[conn.number])  # one send per connection per batch
        for conn in live:
            try:
                await conn.writer.drain()
            except ConnectionError:
                conn.live = False


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    prepared: Prepared = []
    async with FakeTwitchIrcServer() as server:
        conn.send(server.port)
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            try:
                if command == "stop":
                    conn.send(None)
                    return
                if command == "prepare":
                    prepared += render_burst(args[0], args[1], len(server.sent) + len(prepared))
                    conn.send(len(prepared))
                elif command == "blast":
                    count, lines_per_drain, drop_after = args
                    count = len(prepared) if count is None else count
                    await blast(server, prepared[:count], lines_per_drain, drop_after)
                    del prepared[:count]
                    conn.send(len(server.sent))
                else:
                    conn.send(await _run(server, command, *args))
            except Exception as exc:  # the parent raises it; the server keeps serving
                conn.send(exc)


async def _run(server: FakeTwitchIrcServer, command: str, *args: Any) -> Any:
    if command == "burst":
        count, channels, lines_per_drain, drop_after = args
        start = len(server.sent)
        burst = asyncio.create_task(server.broadcast_burst(count, channels, lines_per_drain=lines_per_drain))
        if drop_after is not None:
            while len(server.sent) - start < drop_after and not burst.done():
                await asyncio.sleep(0.001)
            await server.drop_clients()
        await burst
        return len(server.sent)
    if command == "wait_joined":
        channels, timeout = args
        await server.wait_until_joined(channels, timeout=timeout)
        return True
    if command == "delivered":
        return [(m.message_id, m.channel) for m in server.sent if m.delivered]
    if command == "sent_count":
        return len(server.sent)
    raise ValueError(f"unknown command {command!r}")


def _child(conn: Connection) -> None:
    asyncio.run(_serve(conn))


class IrcServerProcess:
    """`async with IrcServerProcess() as irc:` then `irc.port`, `await irc.burst(...)`."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_child, args=(child_conn,), daemon=True)
        self.port = 0

    async def __aenter__(self) -> IrcServerProcess:
        self._process.start()
        self.port = await self._recv()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._call("stop")
        finally:
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()

    async def _recv(self) -> Any:
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, self._conn.recv)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def _call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        return await self._recv()

    async def burst(
        self, count: int, channels: Sequence[str], *, lines_per_drain: int = 500, drop_after: int | None = None
    ) -> int:
        """Send `count` PRIVMSGs round-robin; with `drop_after`, cut every connection once that
        many were sent (the rest of the burst goes to whoever is connected: at first nobody)."""
        return await self._call("burst", count, list(channels), lines_per_drain, drop_after)

    async def prepare(self, count: int, channels: Sequence[str]) -> None:
        """Render `count` more lines now, so sending them later costs the server nothing."""
        await self._call("prepare", count, list(channels))

    async def blast(
        self, count: int | None = None, *, lines_per_drain: int = 500, drop_after: int | None = None
    ) -> int:
        """Send the next `count` prepared lines (all by default; see `blast()`); returns how
        many messages were sent so far."""
        return await self._call("blast", count, lines_per_drain, drop_after)

    async def wait_until_joined(self, channels: Sequence[str], timeout: float = 10.0) -> None:
        await self._call("wait_joined", list(channels), timeout)

    async def delivered(self) -> list[tuple[str, str]]:
        """(message_id, channel) of every message written to a client, in sending order."""
        return await self._call("delivered")

    async def sent_count(self) -> int:
        return await self._call("sent_count")
