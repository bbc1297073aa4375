# Over 400 lines: the connection state machine is one piece (delivery is chat_delivery.py).
"""Asyncio Twitch chat client: one IRC connection joined to many channels, kept alive.

What vod-tender's recorder lacked (reference/vod-tender.md §12.2): it reconnects forever with
capped exponential backoff and full jitter; it notices a dead connection by itself (no
traffic -> PING -> no answer -> reconnect); every interval a channel was not being received is
reported as a `Gap` event, so missing chat is visible instead of silent; and the socket reader
never waits for the consumer: events go into a bounded buffer that drops (and counts) when full.
The token is read from the provider at every connect, so a refreshed token is picked up, and
it never reaches a log line.

    client = TwitchChatClient(["somechannel"], token=..., nick="mybot")
    async with client:
        async for event in client.events():
            ...
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

from reelhouse.archive.twitch.chat_delivery import ChatClientStats, ChatEvent, EventBuffer, Gap
from reelhouse.archive.twitch.chat_events import chat_message_from_line, tmi_sent_time, to_event
from reelhouse.archive.twitch.irc_message import IrcMessage, IrcParseError, format_line, parse_line
from reelhouse.core.jobs.retry import BackoffPolicy

log = logging.getLogger(__name__)

TWITCH_IRC_HOST = "irc.chat.twitch.tv"
TWITCH_IRC_PORT = 6667
TWITCH_IRC_TLS_PORT = 6697
CAPABILITIES = "twitch.tv/tags twitch.tv/commands"

_CHANNEL_LOGIN = re.compile(r"[a-z0-9_]{1,25}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without space
# Lines the client consumes itself; they say nothing about the chat being recorded.
_PROTOCOL_COMMANDS = frozenset({"PING", "PONG", "CAP", "JOIN", "PART", "RECONNECT"})
_AUTH_FAILURE_NOTICES = ("login authentication failed", "improperly formatted auth", "login unsuccessful")
_MAX_LINE_BYTES = 1 << 16  # Twitch lines stay far below this (tags are capped at 8 KiB)
_READ_SIZE = 1 << 16

TokenProvider = Callable[[], Awaitable[str | None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def normalize_channel(name: str) -> str:
    """`#SomeChannel` -> `somechannel`; rejects anything that is not a Twitch login, which also
    keeps commas and spaces out of JOIN lines."""
    login = name.strip().removeprefix("#").lower()
    if not _CHANNEL_LOGIN.fullmatch(login):
        raise ValueError(f"not a Twitch channel login: {name!r}")
    return login


def reconnect_backoff(base: float = 1.0, cap: float = 60.0) -> BackoffPolicy:
    """Full jitter spreads many recorders that lost the same server, so they do not return
    together (core/jobs/retry.py)."""
    return BackoffPolicy(base=base, cap=cap, jitter="full")


class _SessionLost(Exception):
    def __init__(self, reason: str, *, reconnect_now: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reconnect_now = reconnect_now


@dataclass
class _Session:
    """State of one TCP connection; a reconnect starts a fresh one."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    nick: str
    last_traffic: datetime
    last_server_time: datetime | None = None
    established_at: float | None = None
    partial: bytes = b""  # the start of a line whose end has not arrived yet
    arrived: float = 0.0  # time.monotonic() of the last read
    joined: set[str] = field(default_factory=set)


class TwitchChatClient:
    """Reads chat of `channels` over one connection until stopped. Events: the typed
    `TwitchEvent`s of chat_events (protocol chatter such as PING and numerics excluded) and a
    `Gap` per channel per disconnected interval. Counters live in `stats`."""

    def __init__(
        self,
        channels: Iterable[str] = (),
        *,
        token: str | TokenProvider | None = None,
        nick: str | None = None,
        host: str = TWITCH_IRC_HOST,
        port: int | None = None,
        tls: bool | ssl.SSLContext = False,
        queue_size: int = 10_000,
        late_after: float = 5.0,
        connect_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        pong_timeout: float = 10.0,
        backoff: BackoffPolicy | None = None,
        stable_after: float = 60.0,
        join_batch_size: int = 20,
        join_window: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """`token` (static string or async provider, `oauth:` optional) needs `nick`; without a
        token the client reads anonymously as justinfan<digits>. `idle_timeout`: silence before
        the client probes with PING; `pong_timeout`: how long the probe may go unanswered.
        `stable_after`: a session that lasted this long resets the backoff. Joins are sent
        `join_batch_size` channels per `join_window` seconds (Twitch: 20 per 10 s)."""
        if token is not None and not nick:
            raise ValueError("a token needs the bot's nick (TWITCH_BOT_USERNAME)")
        if isinstance(token, str) and token and not _TOKEN.fullmatch(token.removeprefix("oauth:")):
            raise ValueError("the token contains whitespace or control characters")  # never quote it
        self._channels = {normalize_channel(c) for c in channels}
        self._token = token
        self._nick = nick.lower() if nick else None
        self._host = host
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if tls is True else (tls or None)
        self._port = port or (TWITCH_IRC_TLS_PORT if self._ssl else TWITCH_IRC_PORT)
        self._buffer = EventBuffer(queue_size)
        self._late_after = late_after
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._pong_timeout = pong_timeout
        self._backoff = backoff or reconnect_backoff()
        self._stable_after = stable_after
        self._join_batch_size = join_batch_size
        self._join_window = join_window
        self._rng = rng or random.Random()
        self._clock = clock
        self.stats = ChatClientStats()
        self._gap_since: dict[str, tuple[datetime, str]] = {}
        self._session: _Session | None = None
        self._all_joined = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._stopping = False

    def __repr__(self) -> str:
        # Deliberately without the token.
        return f"TwitchChatClient(host={self._host!r}, port={self._port}, channels={sorted(self._channels)})"

    @property
    def dropped(self) -> int:
        return self.stats.dropped

    @property
    def late(self) -> int:
        return self.stats.late

    @property
    def reconnections(self) -> int:
        return self.stats.reconnections

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.established_at is not None

    async def start(self) -> None:
        if self._run_task is None:
            self._run_task = asyncio.create_task(self._run(), name="twitch-chat-client")

    async def stop(self) -> None:
        """Close the connection, report still-open gaps, and end `events()` once drained."""
        self._stopping = True
        if self._run_task is not None:
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        for channel in list(self._gap_since):
            self._close_gap(channel, suffix="; client stopped before rejoining")
        self._buffer.close()

    async def __aenter__(self) -> TwitchChatClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def events(self) -> AsyncIterator[ChatEvent]:
        """The events in arrival order, for one consumer; ends after stop() once drained."""
        async for batch in self.event_batches():
            for event in batch:
                yield event

    async def event_batches(self) -> AsyncIterator[list[ChatEvent]]:
        """Like events(), but everything that is waiting at once, in arrival order: at high
        rates a consumer then pays its per-wakeup cost once per read, not once per message."""
        while items := await self._buffer.take_all():
            now = time.monotonic()
            if now - items[0][0] > self._late_after:  # oldest first: only then can any be late
                self.stats.late += sum(1 for arrived, _ in items if now - arrived > self._late_after)
            self.stats.events_delivered += len(items)
            yield [event for _, event in items]

    async def wait_until_joined(self, timeout: float | None = None) -> None:
        """Wait until the current connection has joined every channel."""
        async with asyncio.timeout(timeout):
            await self._all_joined.wait()

    async def join(self, channel: str) -> None:
        login = normalize_channel(channel)
        self._channels.add(login)
        self._all_joined.clear()
        if self.connected and self._session is not None:
            self._send(self._session, format_line("JOIN", f"#{login}"))

    async def part(self, channel: str) -> None:
        login = normalize_channel(channel)
        self._channels.discard(login)
        self._gap_since.pop(login, None)
        if self.connected and self._session is not None and login in self._session.joined:
            self._send(self._session, format_line("PART", f"#{login}"))
        self._update_all_joined()

    # --- connection lifecycle --------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._stopping:
                lost = await self._session_outcome()
                session, self._session = self._session, None
                self._all_joined.clear()
                if session is not None:
                    session.writer.transport.abort()
                if session is not None and session.established_at is not None:
                    self.stats.reconnections += 1
                    last_delivered = min(session.last_traffic, session.last_server_time or session.last_traffic)
                    for channel in session.joined:
                        self._gap_since.setdefault(channel, (last_delivered, lost.reason))
                    if time.monotonic() - session.established_at >= self._stable_after:
                        attempt = 0
                else:
                    self.stats.connect_failures += 1
                delay = 0.0 if lost.reconnect_now else self._backoff.delay(attempt + 1, self._rng)
                attempt = attempt if lost.reconnect_now else attempt + 1
                log.warning("twitch chat disconnected (%s); reconnecting in %.2fs", lost.reason, delay)
                await asyncio.sleep(delay)
        finally:
            if self._session is not None:  # stop() cancelled us mid-session
                self._session.writer.transport.abort()
                self._session = None

    async def _session_outcome(self) -> _SessionLost:
        """Run one connection until it ends and say why it ended."""
        try:
            await self._run_session()
        except _SessionLost as exc:
            return exc
        except (OSError, TimeoutError, EOFError) as exc:
            return _SessionLost(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not end recording forever (vod-tender §12.2)
            log.exception("twitch chat session failed unexpectedly")
            return _SessionLost(f"internal error: {type(exc).__name__}")

    async def _run_session(self) -> NoReturn:
        token = await self._current_token()
        # Without a token (or a nick to go with it) chat is read anonymously, as Twitch allows.
        nick = self._nick if token and self._nick else f"justinfan{self._rng.randint(10_000, 99_999_999)}"
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl, limit=_MAX_LINE_BYTES)
        session = _Session(reader=reader, writer=writer, nick=nick, last_traffic=self._clock())
        self._session = session
        log.info("twitch chat connected to %s:%d as %s", self._host, self._port, nick)
        self._send(session, format_line("CAP", "REQ", trailing=CAPABILITIES))
        if token:
            self._send(session, f"PASS oauth:{token}", loggable="PASS oauth:***")
        self._send(session, format_line("NICK", nick))
        join_task: asyncio.Task[None] | None = None
        try:
            while True:
                newest: datetime | None = None  # server time of the last stamped line
                for line in await self._read_lines(session):
                    chat = chat_message_from_line(line)  # most lines: a plain PRIVMSG
                    if chat is not None:
                        newest = chat.sent_at or newest
                        self._deliver(chat)
                        continue
                    msg = self._parse(line)
                    if msg is None:
                        continue
                    if "tmi-sent-ts" in msg.tags:
                        newest = tmi_sent_time(msg.tags) or newest
                    if msg.command == "001" and session.established_at is None:
                        session.established_at = time.monotonic()
                        join_task = asyncio.create_task(self._send_joins(session))
                        self._update_all_joined()  # nothing to join counts as all joined
                    self._handle(session, msg)
                if newest is not None:
                    session.last_server_time = newest  # where a gap would start
        finally:
            if join_task is not None:
                join_task.cancel()

    async def _current_token(self) -> str | None:
        token = self._token if self._token is None or isinstance(self._token, str) else await self._token()
        if not token:
            return None
        token = token.removeprefix("oauth:")
        if not _TOKEN.fullmatch(token):
            # Refuse rather than send: a space or CRLF would split the PASS line. The message
            # must not quote the token.
            self.stats.auth_failures += 1
            raise _SessionLost("token contains whitespace or control characters")
        return token

    async def _send_joins(self, session: _Session) -> None:
        pending = sorted(self._channels)
        for start in range(0, len(pending), self._join_batch_size):
            if start:
                await asyncio.sleep(self._join_window)
            batch = ",".join(f"#{c}" for c in pending[start : start + self._join_batch_size])
            self._send(session, format_line("JOIN", batch))

    async def _read_lines(self, session: _Session) -> list[str]:
        """The complete lines of the next read (at least one). Reads whatever has arrived, up to
        64 KiB, instead of a line at a time: at chat's peak rates the per-read cost (a wakeup, a
        timeout) is then paid per few hundred lines. Probes an idle connection with PING and
        gives up when the probe goes unanswered."""
        if session.established_at is None:
            timeout, probing = self._connect_timeout, True  # no welcome in time: retry elsewhere
        else:
            timeout, probing = self._idle_timeout, False
        while True:
            try:
                async with asyncio.timeout(timeout):
                    data = await session.reader.read(_READ_SIZE)
            except TimeoutError:
                if probing:
                    raise _SessionLost(f"no traffic for {timeout:g}s and no reply to PING") from None
                self._send(session, format_line("PING", trailing="tmi.twitch.tv"))
                timeout, probing = self._pong_timeout, True
                continue
            if not data:
                # EOF; a partial last line was cut mid-transfer and is not a message.
                raise _SessionLost("connection closed by server")
            session.arrived = time.monotonic()
            session.last_traffic = self._clock()
            buffer = session.partial + data if session.partial else data
            complete, newline, session.partial = buffer.rpartition(b"\n")
            # One decode for the whole read: a newline byte never sits inside a UTF-8 sequence.
            lines = complete.decode("utf-8", errors="replace").split("\n") if newline else []
            if len(buffer) > _MAX_LINE_BYTES and max([len(session.partial), *map(len, lines)]) > _MAX_LINE_BYTES:
                # Past this no sane Twitch line goes; the stream cannot be trusted: start over.
                raise _SessionLost(f"line longer than {_MAX_LINE_BYTES} bytes")
            if lines:
                self.stats.lines_received += len(lines)
                return lines
            timeout, probing = self._idle_timeout, False  # traffic came, the line is still going

    def _parse(self, line: str) -> IrcMessage | None:
        try:
            return parse_line(line)
        except IrcParseError as exc:
            self.stats.parse_errors += 1
            log.debug("unparseable chat line (%s): %r", exc, line[:200])
            return None

    def _handle(self, session: _Session, msg: IrcMessage) -> None:
        command = msg.command
        if command == "PING":
            self._send(session, format_line("PONG", trailing=msg.arguments[-1] if msg.arguments else "tmi.twitch.tv"))
        elif command == "RECONNECT":
            raise _SessionLost("server requested reconnect", reconnect_now=True)
        elif command == "JOIN" and msg.prefix and msg.prefix.nick == session.nick and msg.channel:
            session.joined.add(msg.channel)
            self._close_gap(msg.channel)
            self._update_all_joined()
        elif command == "PART" and msg.prefix and msg.prefix.nick == session.nick and msg.channel:
            session.joined.discard(msg.channel)
        elif command == "NOTICE" and session.established_at is None:
            text = (msg.trailing or "").lower()
            self._deliver(to_event(msg))
            if any(marker in text for marker in _AUTH_FAILURE_NOTICES):
                self.stats.auth_failures += 1
                log.error("twitch chat login failed for %s: %s", session.nick, msg.trailing)
                raise _SessionLost("login authentication failed")
        elif command not in _PROTOCOL_COMMANDS and not command.isdigit():
            self._deliver(to_event(msg))

    def _send(self, session: _Session, line: str, *, loggable: str | None = None) -> None:
        # No drain: client lines are a few bytes and rare; awaiting here would stall reading.
        session.writer.write(line.encode() + b"\r\n")
        log.debug("> %s", loggable if loggable is not None else line)

    # --- events --------------------------------------------------------------------------

    def _deliver(self, event: ChatEvent) -> None:
        arrived = self._session.arrived if self._session is not None else time.monotonic()
        if not self._buffer.offer(event, arrived):
            self.stats.dropped += 1

    def _close_gap(self, channel: str, *, suffix: str = "") -> None:
        opened = self._gap_since.pop(channel, None)
        if opened is not None:
            started_at, reason = opened
            gap = Gap(channel=channel, started_at=started_at, ended_at=self._clock(), reason=reason + suffix)
            log.info("chat gap in #%s: %.1fs (%s)", channel, gap.duration.total_seconds(), gap.reason)
            self._buffer.offer(gap, time.monotonic(), always=True)

    def _update_all_joined(self) -> None:
        if self._session is not None and self._channels <= self._session.joined:
            self._all_joined.set()
        else:
            self._all_joined.clear()
