"""LL-HLS delivery directives of the live playback routes: blocking playlist reload
(`_HLS_msn`, `_HLS_part`: RFC 8216bis 6.2.5.2) and blocking requests of the preload-hint part.

How a held request learns that a part exists: the live transcode stores it, then the playlist.
When that transcode runs in this process (the embedded worker, the tests), it calls
`PlaylistSignals.notify(folder)` right after storing the playlist, and the held requests of that
playlist wake at once: no polling. A transcode in another worker process has no way to reach
this one (storage has no change notifications, neither the fs backend nor S3, and workers do not
talk to the server), so when this process has not seen the playlist written lately, a held
request re-reads it from storage every POLL_INTERVAL: a short poll, bounded by the hold timeout
(three target durations), of one small object.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

ADVANCE_PART_LIMIT = 3  # RFC 8216bis 6.2.5.2
HOLD_TARGETS = 3  # hold a blocking request at most three target durations
POLL_INTERVAL = 0.1  # re-read of a playlist written by another process
LOCAL_WRITER_WINDOW = 3.0  # a playlist written here this recently has a writer in this process
_NUMBER = re.compile(r"^[0-9]{1,12}$")


class DirectiveError(ValueError):
    """A delivery directive the server refuses (400)."""


@dataclass(frozen=True)
class Directive:
    msn: int
    part: int | None


def parse_directive(query: Mapping[str, str]) -> Directive | None:
    raw_msn, raw_part = query.get("_HLS_msn"), query.get("_HLS_part")
    if raw_msn is None:
        if raw_part is not None:
            raise DirectiveError("_HLS_part needs _HLS_msn")
        return None
    if not _NUMBER.match(raw_msn) or (raw_part is not None and not _NUMBER.match(raw_part)):
        raise DirectiveError("_HLS_msn and _HLS_part are non-negative integers")
    return Directive(int(raw_msn), None if raw_part is None else int(raw_part))


@dataclass(frozen=True)
class Position:
    """Where a stored media playlist stands, read back from its text (the server answering a
    blocking reload may not be the process that wrote it)."""

    can_block: bool  # EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES
    ended: bool
    target: int  # EXT-X-TARGETDURATION
    last_msn: int  # media sequence number of the last complete segment (sequence - 1: none)
    last_parts: int  # parts listed for that segment (0: not listed)
    pending: int  # parts of the segment being built (media sequence number last_msn + 1)
    hint: str | None  # the preload hint's URI

    @classmethod
    def of(cls, text: str) -> Position:
        sequence = segments = last_parts = run = 0
        target = 1
        can_block = ended = False
        hint = None
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                sequence = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-TARGETDURATION:"):
                target = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-SERVER-CONTROL:"):
                can_block = "CAN-BLOCK-RELOAD=YES" in line
            elif line.startswith("#EXT-X-PART:"):
                run += 1
            elif line.startswith("#EXT-X-PRELOAD-HINT:"):
                hint = _attribute(line, "URI")
            elif line == "#EXT-X-ENDLIST":
                ended = True
            elif line and not line.startswith("#"):
                segments += 1
                last_parts, run = run, 0
        return cls(can_block, ended, target, sequence + segments - 1, last_parts, run, hint)

    def has(self, msn: int, part: int | None) -> bool:
        """Does the playlist hold segment `msn` (part None) or part `part` of segment `msn` or
        anything after it (RFC 8216bis 6.2.5.2)?"""
        if self.ended or self.last_msn > msn:
            return True
        if part is None:
            return self.last_msn >= msn
        if self.last_msn == msn:  # complete; asking past its last part means the next one
            return part < self.last_parts or self.pending > 0
        return self.last_msn == msn - 1 and self.pending > part

    def too_far(self, msn: int, part: int | None) -> bool:
        """A directive the server answers with 400 at once: a segment more than two after the
        last one, or a part more than the Advance Part Limit (3) after the last part."""
        if msn > self.last_msn + 2:
            return True
        if part is None:
            return False
        last_part_msn, last_part = (
            (self.last_msn + 1, self.pending - 1) if self.pending else (self.last_msn, self.last_parts - 1)
        )
        if msn == last_part_msn:
            return part > last_part + ADVANCE_PART_LIMIT
        return msn > last_part_msn and part >= ADVANCE_PART_LIMIT


def _attribute(line: str, name: str) -> str | None:
    found = re.search(rf'(?:[:,]){name}="([^"]*)"', line)
    return found.group(1) if found else None


class PlaylistSignals:
    """Wakes the requests held on a playlist when this process stores a new version of it.
    Thread-safe: the writer may run on another event loop than the waiters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._written: dict[str, float] = {}

    def notify(self, folder: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._written[folder] = now
            if len(self._written) > 4096:  # forget tracks nobody wrote for a while
                self._written = {k: t for k, t in self._written.items() if now - t < LOCAL_WRITER_WINDOW}
            waiters = self._waiters.pop(folder, set())
        for future in waiters:
            future.get_loop().call_soon_threadsafe(_wake, future)

    def written_here(self, folder: str) -> bool:
        with self._lock:
            at = self._written.get(folder)
        return at is not None and time.monotonic() - at < LOCAL_WRITER_WINDOW

    def ticket(self, folder: str) -> asyncio.Future[None]:
        """Taken before reading the playlist, so a write between the read and the wait is not missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.setdefault(folder, set()).add(future)
        return future

    async def wait(self, folder: str, future: asyncio.Future[None], timeout: float) -> None:
        try:
            with contextlib.suppress(TimeoutError):  # the caller answers from what is stored
                await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self.cancel(folder, future)

    def cancel(self, folder: str, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(folder)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[folder]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True)
class Held:
    text: str | None  # the playlist (None: there is none)
    timed_out: bool = False


async def hold_playlist(
    read: Callable[[], Awaitable[str | None]], folder: str, directive: Directive, signals: PlaylistSignals
) -> Held:
    """The playlist once it holds what the directive asks for (DirectiveError: never will)."""
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while True:
        future = signals.ticket(folder)
        try:
            text = await read()
        except BaseException:
            signals.cancel(folder, future)
            raise
        position = Position.of(text) if text is not None else None
        if position is None or not position.can_block or position.has(directive.msn, directive.part):
            signals.cancel(folder, future)
            return Held(text)  # none, a regular playlist (directives do not apply), or satisfied
        if deadline is None:
            if position.too_far(directive.msn, directive.part):
                signals.cancel(folder, future)
                raise DirectiveError(
                    f"_HLS_msn={directive.msn}"
                    + ("" if directive.part is None else f"&_HLS_part={directive.part}")
                    + f" is too far ahead of the playlist (last segment {position.last_msn})"
                )
            deadline = loop.time() + HOLD_TARGETS * position.target
        remaining = deadline - loop.time()
        if remaining <= 0:
            signals.cancel(folder, future)
            return Held(text, timed_out=True)
        wait = remaining if signals.written_here(folder) else min(remaining, POLL_INTERVAL)
        await signals.wait(folder, future, wait)


async def hold_hinted(
    exists: Callable[[], Awaitable[bool]], read: Callable[[], Awaitable[str | None]], folder: str, name: str,
    signals: PlaylistSignals,
) -> bool:  # fmt: skip
    """A request of a part not stored yet: when it is the playlist's preload hint, wait for it
    (bounded like a blocking reload) instead of answering 404. True when it exists."""
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while True:
        future = signals.ticket(folder)
        if await exists():
            signals.cancel(folder, future)
            return True
        if deadline is None:
            text = await read()
            position = Position.of(text) if text is not None else None
            if position is None or not position.can_block or position.ended or position.hint != name:
                signals.cancel(folder, future)
                return False
            deadline = loop.time() + HOLD_TARGETS * position.target
        remaining = deadline - loop.time()
        if remaining <= 0:
            signals.cancel(folder, future)
            return False
        wait = remaining if signals.written_here(folder) else min(remaining, POLL_INTERVAL)
        await signals.wait(folder, future, wait)
