"""The fake Twitch IRC server in a child process, driven over a pipe.

At 200,000 messages the fake's own work (building tagged lines) costs as much CPU as the code
under test; in another process it no longer competes with the client and the writer for the
test's event loop, and the ingest measurements (tests and bench/chat.py) measure reelhouse.
The server keeps its ground truth (what it delivered, in order) and hands it back on request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.twitch_irc import FakeTwitchIrcServer


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    async with FakeTwitchIrcServer() as server:
        conn.send(server.port)
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            try:
                if command == "stop":
                    conn.send(None)
                    return
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

    async def burst(self, count: int, channels: Sequence[str], *, lines_per_drain: int = 500,
                    drop_after: int | None = None) -> int:
        """Send `count` PRIVMSGs round-robin; with `drop_after`, cut every connection once that
        many were sent (the rest of the burst goes to whoever is connected: at first nobody)."""
        return await self._call("burst", count, list(channels), lines_per_drain, drop_after)

    async def wait_until_joined(self, channels: Sequence[str], timeout: float = 10.0) -> None:
        await self._call("wait_joined", list(channels), timeout)

    async def delivered(self) -> list[tuple[str, str]]:
        """(message_id, channel) of every message written to a client, in sending order."""
        return await self._call("delivered")

    async def sent_count(self) -> int:
        return await self._call("sent_count")
