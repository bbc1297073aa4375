"""What the chat client hands its consumer, and how: `Gap` records for the time a channel was
not received, the bounded buffer between the socket reader and the consumer, and the client's
counters. The connection itself is irc_client.py."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from reelhouse.archive.twitch.chat_events import TwitchEvent

__all__ = ["ChatClientStats", "ChatEvent", "EventBuffer", "Gap"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Chat of `channel` was not received from `started_at` to `ended_at`, so any message whose
    `sent_at` falls inside may be missing. `started_at` is the last moment the old connection is
    known to have delivered: the earlier of the arrival of its last line and that line's server
    timestamp (lines read from the socket buffer after the link died arrive late, but their
    server time does not lie). `ended_at` is when the channel's JOIN was confirmed again."""

    channel: str
    started_at: datetime
    ended_at: datetime
    reason: str

    @property
    def duration(self) -> timedelta:
        return self.ended_at - self.started_at


ChatEvent = TwitchEvent | Gap


@dataclass
class ChatClientStats:
    lines_received: int = 0
    events_delivered: int = 0
    dropped: int = 0  # events discarded because the consumer's buffer was full
    late: int = 0  # events the consumer took more than `late_after` seconds after arrival
    reconnections: int = 0  # established sessions that were lost, each followed by a reconnect
    connect_failures: int = 0  # attempts that never reached the welcome message
    auth_failures: int = 0
    parse_errors: int = 0


class EventBuffer:
    """Bounded FIFO between the socket reader and the consumer. `offer` never waits: when full
    the event is dropped and the caller counts it. Gaps are offered with `always=True`: they are
    few and are the only record that chat is missing, so they are never the ones dropped."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[tuple[float, ChatEvent]] = deque()
        self._capacity = capacity
        self._readable = asyncio.Event()
        self._closed = False

    def offer(self, event: ChatEvent, arrived: float, *, always: bool = False) -> bool:
        """`arrived`: time.monotonic() when the data holding the event was read."""
        if self._closed or (not always and len(self._items) >= self._capacity):
            return False
        self._items.append((arrived, event))
        self._readable.set()
        return True

    async def take_all(self) -> list[tuple[float, ChatEvent]]:
        """Every buffered event (at least one) with its arrival time; [] once closed and drained."""
        while not self._items:
            if self._closed:
                return []
            self._readable.clear()
            await self._readable.wait()
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        self._closed = True
        self._readable.set()
