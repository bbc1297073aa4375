"""Wire-level fake of Twitch chat: an asyncio TCP server on 127.0.0.1 speaking IRC the way
irc.chat.twitch.tv does (https://dev.twitch.tv/docs/chat/irc/): CAP ACK, PASS/NICK login with
the 001-376 welcome, JOIN echo + NAMES + USERSTATE + ROOMSTATE, PING/PONG, RECONNECT, tagged
PRIVMSG lines with escaped values. Tags and Twitch commands are only sent to connections that
requested the capabilities, as Twitch does.

The server keeps the ground truth tests compare against: every PRIVMSG it wrote, and to which
connections (live and joined to that channel at that moment). `drop_clients()` cuts connections
abruptly (no QUIT, no RECONNECT) but only after the bytes already written have reached the
client's kernel, so "delivered" means delivered: a message written before the drop was on the
wire, and one written after it went to nobody. A client that misses a delivered message, or
reports one twice, is wrong.
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import ssl
import struct
import termios
import uuid
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from reelhouse.archive.twitch.irc_message import IrcMessage, format_line, parse_line

CORPUS_PATH = Path(__file__).with_name("irc_corpus.txt")
SERVER = "tmi.twitch.tv"
SUPPORTED_CAPS = frozenset({"twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership"})
_ANONYMOUS_NICK = re.compile(r"justinfan\d+")


def _now() -> datetime:
    return datetime.now(UTC)


def load_corpus(path: Path = CORPUS_PATH) -> dict[str, str]:
    """Named raw lines of irc_corpus.txt: a `[name]` line labels the line after it."""
    corpus: dict[str, str] = {}
    name: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
        elif name is not None:
            if name in corpus:
                raise ValueError(f"corpus entry {name!r} appears twice")
            corpus[name], name = line, None
    return corpus


def room_id_for(channel: str) -> str:
    """A stable fake Twitch user id per channel, so room-id tags look real and repeat."""
    return str(zlib.crc32(channel.encode()) % 100_000_000)


@dataclass
class SentMessage:
    message_id: str
    channel: str
    text: str
    line: str
    sent_at: datetime
    delivered_to: tuple[int, ...]  # numbers of the connections the line was written to

    @property
    def delivered(self) -> bool:
        return bool(self.delivered_to)


@dataclass
class FakeIrcConnection:
    """One client connection as the server sees it."""

    number: int
    writer: asyncio.StreamWriter
    connected_at: datetime
    received: list[str] = field(default_factory=list)  # lines from the client, in order
    caps: set[str] = field(default_factory=set)
    password: str | None = None
    nick: str | None = None
    authenticated: bool = False  # logged in with a token (not anonymous)
    welcomed: bool = False
    joined: set[str] = field(default_factory=set)
    join_times: dict[str, datetime] = field(default_factory=dict)
    pongs: list[str] = field(default_factory=list)
    live: bool = True
    silenced: bool = False  # half-open: the server neither reads nor writes any more
    disconnected_at: datetime | None = None

    def write_line(self, line: str) -> None:
        if "twitch.tv/tags" not in self.caps and line.startswith("@"):
            line = line.split(" ", 1)[1]
        self.writer.write(line.encode() + b"\r\n")

    def write_lines(self, lines: list[str]) -> None:
        """Several lines in one write: a burst costs the fake one send per batch, not per line."""
        if not lines:
            return
        if "twitch.tv/tags" not in self.caps:
            lines = [line.split(" ", 1)[1] if line.startswith("@") else line for line in lines]
        self.writer.write(("\r\n".join(lines) + "\r\n").encode())

    async def flush_to_peer(self, timeout: float = 5.0) -> None:
        """Wait until asyncio's buffer and the kernel send queue are empty, i.e. the client's
        kernel has acknowledged every byte, so aborting now cannot lose written lines."""
        transport = self.writer.transport
        sock = transport.get_extra_info("socket")
        async with asyncio.timeout(timeout):
            while transport.get_write_buffer_size() > 0 or _unacked_bytes(sock) > 0:
                await asyncio.sleep(0.001)

    def abort(self) -> None:
        self.live = False
        self.disconnected_at = _now()
        self.writer.transport.abort()


def _unacked_bytes(sock: object) -> int:
    if sock is None:
        return 0
    # TIOCOUTQ (= SIOCOUTQ on Linux): bytes in the send queue not yet acknowledged by the peer.
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))  # type: ignore[attr-defined]
    return int(struct.unpack("i", raw)[0])


class FakeTwitchIrcServer:
    def __init__(
        self, *, accepted_tokens: Collection[str] | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """`accepted_tokens`: tokens (without `oauth:`) that may log in; None accepts any."""
        self.host = "127.0.0.1"
        self.port = 0
        self.connections: list[FakeIrcConnection] = []
        self.sent: list[SentMessage] = []
        self.drops: list[datetime] = []  # when each drop_clients() cut the connections
        self._accepted_tokens = None if accepted_tokens is None else set(accepted_tokens)
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._write_lock = asyncio.Lock()  # a burst chunk and a drop never interleave
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeTwitchIrcServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            if conn.live:
                conn.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeTwitchIrcServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def live_connections(self) -> list[FakeIrcConnection]:
        return [c for c in self.connections if c.live and not c.silenced]

    def delivered_message_ids(self) -> list[str]:
        return [m.message_id for m in self.sent if m.delivered]

    # --- waiting for the client ------------------------------------------------------------

    async def wait_for_connections(self, count: int, timeout: float = 5.0) -> FakeIrcConnection:
        """Wait until `count` connections were ever accepted; returns the latest."""
        async with asyncio.timeout(timeout):
            while len(self.connections) < count:
                await asyncio.sleep(0.005)
        return self.connections[-1]

    async def wait_until_joined(self, channels: Iterable[str], timeout: float = 5.0) -> FakeIrcConnection:
        """A live connection joined to all `channels`."""
        wanted = {c.removeprefix("#").lower() for c in channels}
        async with asyncio.timeout(timeout):
            while True:
                for conn in self.live_connections:
                    if wanted <= conn.joined:
                        return conn
                await asyncio.sleep(0.005)

    # --- scripted traffic ------------------------------------------------------------------

    async def send_privmsg(self, channel: str, text: str, *, login: str = "viewer", **tags: str) -> SentMessage:
        """Tags are given as keyword arguments with '_' for '-' (`display_name=`, `bits=`)."""
        async with self._write_lock:
            message = self._write_privmsg(channel.removeprefix("#").lower(), text, login, tags)
            await self._drain_all()
        return message

    async def broadcast_burst(
        self, n: int, channels: Iterable[str], *, lines_per_drain: int = 200, pause: float = 0.0
    ) -> list[SentMessage]:
        """Write `n` PRIVMSGs round-robin over `channels`, `lines_per_drain` lines between two
        drains, sleeping `pause` seconds between chunks (0: as fast as the client reads)."""
        names = [c.removeprefix("#").lower() for c in channels]
        written: list[SentMessage] = []
        for chunk_start in range(0, n, lines_per_drain):
            async with self._write_lock:
                for index in range(chunk_start, min(n, chunk_start + lines_per_drain)):
                    channel = names[index % len(names)]
                    text = f"burst message {index} in #{channel} PogChamp"
                    written.append(self._write_privmsg(channel, text, f"viewer{index % 97}", {}))
                await self._drain_all()
            await asyncio.sleep(pause)
        return written

    async def send_raw(self, line: str, channel: str | None = None) -> None:
        """Send a prepared line to every live connection (joined to `channel`, if given)."""
        async with self._write_lock:
            for conn in self._recipients(channel):
                conn.write_line(line)
            await self._drain_all()

    async def send_ping(self, origin: str = SERVER, timeout: float = 2.0) -> bool:
        """PING every live connection; True when each answered with a PONG carrying `origin`."""
        targets = self.live_connections
        seen = {conn.number: len(conn.pongs) for conn in targets}
        for conn in targets:
            conn.write_line(format_line("PING", trailing=origin))
        try:
            async with asyncio.timeout(timeout):
                while not all(origin in conn.pongs[seen[conn.number] :] for conn in targets):
                    await asyncio.sleep(0.005)
        except TimeoutError:
            return False
        return bool(targets)

    async def send_reconnect(self) -> None:
        await self.send_raw(format_line("RECONNECT", prefix=SERVER))

    async def drop_clients(self) -> None:
        """Cut every live connection without QUIT or RECONNECT, as a network failure would."""
        async with self._write_lock:
            for conn in self.live_connections:
                await conn.flush_to_peer()
                conn.abort()
            self.drops.append(_now())

    def silence_clients(self) -> None:
        """Stop reading from and writing to live connections, leaving them open: a half-open
        connection that only the client's keepalive can detect."""
        for conn in self.live_connections:
            conn.silenced = True

    # --- internals -------------------------------------------------------------------------

    def _recipients(self, channel: str | None) -> list[FakeIrcConnection]:
        return [c for c in self.live_connections if c.welcomed and (channel is None or channel in c.joined)]

    def _write_privmsg(self, channel: str, text: str, login: str, overrides: dict[str, str]) -> SentMessage:
        sent_at = _now()
        message_id = str(uuid.uuid4())
        tags = {
            "badge-info": "",
            "badges": "",
            "color": "#1E90FF",
            "display-name": login.capitalize(),
            "emotes": "",
            "first-msg": "0",
            "flags": "",
            "id": message_id,
            "mod": "0",
            "returning-chatter": "0",
            "room-id": room_id_for(channel),
            "subscriber": "0",
            "tmi-sent-ts": str(int(sent_at.timestamp() * 1000)),
            "turbo": "0",
            "user-id": str(zlib.crc32(login.encode()) % 1_000_000_000),
            "user-type": "",
        }
        tags.update({key.replace("_", "-"): value for key, value in overrides.items()})
        message_id = tags["id"]
        line = format_line(
            "PRIVMSG", f"#{channel}", trailing=text, tags=tags, prefix=f"{login}!{login}@{login}.{SERVER}"
        )
        recipients = self._recipients(channel)
        for conn in recipients:
            conn.write_line(line)
        message = SentMessage(message_id, channel, text, line, sent_at, tuple(c.number for c in recipients))
        self.sent.append(message)
        return message

    async def _drain_all(self) -> None:
        for conn in self.live_connections:
            try:
                await conn.writer.drain()
            except ConnectionError:
                conn.live = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = FakeIrcConnection(number=len(self.connections) + 1, writer=writer, connected_at=_now())
        self.connections.append(conn)
        try:
            while raw := await reader.readline():
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                conn.received.append(line)
                if conn.silenced or not line:
                    continue
                self._answer(conn, parse_line(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; the finally block records it
        finally:
            if conn.live:
                conn.live = False
                conn.disconnected_at = _now()
            writer.transport.abort()
            self._handlers.discard(task)

    def _answer(self, conn: FakeIrcConnection, msg: IrcMessage) -> None:
        command, args = msg.command, msg.arguments
        if command == "CAP" and args[:1] == ("REQ",) and len(args) > 1:
            requested = set(args[1].split())
            verdict = "ACK" if requested <= SUPPORTED_CAPS else "NAK"
            if verdict == "ACK":
                conn.caps |= requested
            conn.write_line(format_line("CAP", "*", verdict, trailing=args[1], prefix=SERVER))
        elif command == "PASS" and args:
            conn.password = args[0]
        elif command == "NICK" and args:
            self._log_in(conn, args[0])
        elif command == "JOIN" and args and conn.welcomed:
            for channel in args[0].split(","):
                self._join(conn, channel.removeprefix("#").lower())
        elif command == "PART" and args and conn.welcomed:
            for channel in args[0].split(","):
                name = channel.removeprefix("#").lower()
                conn.joined.discard(name)
                conn.write_line(format_line("PART", f"#{name}", prefix=self._user_prefix(conn)))
        elif command == "PING":
            conn.write_line(format_line("PONG", SERVER, trailing=args[-1] if args else SERVER, prefix=SERVER))
        elif command == "PONG":
            conn.pongs.append(args[-1] if args else "")

    def _log_in(self, conn: FakeIrcConnection, nick: str) -> None:
        nick = nick.lower()
        if not _ANONYMOUS_NICK.fullmatch(nick):
            password = conn.password or ""
            if not password.startswith("oauth:"):
                self._refuse(conn, "Improperly formatted auth")
                return
            token = password.removeprefix("oauth:")
            if self._accepted_tokens is not None and token not in self._accepted_tokens:
                self._refuse(conn, "Login authentication failed")
                return
            conn.authenticated = True
        conn.nick = nick
        conn.welcomed = True
        welcome = [
            ("001", "Welcome, GLHF!"),
            ("002", f"Your host is {SERVER}"),
            ("003", "This server is rather new"),
            ("004", "-"),
            ("375", "-"),
            ("372", "You are in a great company!"),
            ("376", ">"),
        ]
        for numeric, text in welcome:
            conn.write_line(format_line(numeric, nick, trailing=text, prefix=SERVER))
        if conn.authenticated and "twitch.tv/commands" in conn.caps:
            tags = {
                "badge-info": "",
                "badges": "",
                "color": "",
                "display-name": nick,
                "emote-sets": "0",
                "user-id": str(zlib.crc32(nick.encode()) % 1_000_000_000),
                "user-type": "",
            }
            conn.write_line(format_line("GLOBALUSERSTATE", tags=tags, prefix=SERVER))

    def _refuse(self, conn: FakeIrcConnection, reason: str) -> None:
        # Twitch answers a bad login with a NOTICE and closes the connection.
        conn.write_line(format_line("NOTICE", "*", trailing=reason, prefix=SERVER))
        conn.live = False
        conn.disconnected_at = _now()
        conn.writer.close()

    def _join(self, conn: FakeIrcConnection, channel: str) -> None:
        nick = conn.nick or ""
        conn.joined.add(channel)
        conn.join_times[channel] = _now()
        conn.write_line(format_line("JOIN", f"#{channel}", prefix=self._user_prefix(conn)))
        conn.write_line(format_line("353", nick, "=", f"#{channel}", trailing=nick, prefix=f"{nick}.{SERVER}"))
        conn.write_line(
            format_line("366", nick, f"#{channel}", trailing="End of /NAMES list", prefix=f"{nick}.{SERVER}")
        )
        if "twitch.tv/commands" not in conn.caps:
            return
        if conn.authenticated:
            user_state = {
                "badge-info": "",
                "badges": "",
                "color": "",
                "display-name": nick,
                "emote-sets": "0",
                "mod": "0",
                "subscriber": "0",
                "user-type": "",
            }
            conn.write_line(format_line("USERSTATE", f"#{channel}", tags=user_state, prefix=SERVER))
        room_state = {
            "emote-only": "0",
            "followers-only": "-1",
            "r9k": "0",
            "room-id": room_id_for(channel),
            "slow": "0",
            "subs-only": "0",
        }
        conn.write_line(format_line("ROOMSTATE", f"#{channel}", tags=room_state, prefix=SERVER))

    @staticmethod
    def _user_prefix(conn: FakeIrcConnection) -> str:
        nick = conn.nick or ""
        return f"{nick}!{nick}@{nick}.{SERVER}"
