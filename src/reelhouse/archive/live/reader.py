"""A Streamlink-style live HLS reader: reload the sliding-window media playlist, hand every new
content segment to a sink in order, skip stitched ads, notice gaps and the end of the stream.

What is "new" survives a crash: the caller passes where the previous run stopped (the last
stored segment's PROGRAM-DATE-TIME, which is the stream's clock and the same in every viewer
session, and its media sequence number as a fallback for playlists without dates), and the
first reload of a fresh recording takes every segment in the window (Streamlink's
`--hls-live-restart`), so a recording that starts within one window of the broadcast has its
first segment.

Gaps are counted, never hidden: segments that left the window before they were read (a slow
reload, a restart longer than the window) and segments the edge no longer serves are `lost`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reelhouse.archive.live.playlist import AdRange, MediaPlaylist, Segment, classify, parse_media_playlist
from reelhouse.archive.twitch.playback import Offline, TwitchPlayback
from reelhouse.core.providers.errors import Unavailable

log = logging.getLogger("reelhouse.archive.live")

_DATE_SLACK = timedelta(milliseconds=50)  # rounding of PROGRAM-DATE-TIME between sessions


@dataclass
class Position:
    """Where the recording is: the last handled segment (stored or skipped as an ad)."""

    program_date: datetime | None = None
    sequence: int | None = None
    elapsed: float | None = None  # broadcast seconds before the first stored segment
    broadcast_id: str | None = None  # usher's BROADCAST-ID of the stream being recorded

    def is_new(self, segment: Segment) -> bool:
        if self.program_date is not None and segment.program_date is not None:
            return segment.program_date > self.program_date + _DATE_SLACK
        if self.sequence is not None:
            return segment.sequence > self.sequence
        return True

    def advance(self, segment: Segment) -> None:
        self.sequence = segment.sequence
        if segment.program_date is not None:
            self.program_date = segment.program_date


@dataclass
class ReaderStats:
    reloads: int = 0
    ads: int = 0
    ad_seconds: float = 0.0
    lost: int = 0
    discontinuities: int = 0
    sessions: int = 0


Sink = Callable[[Segment, bytes, Position], Awaitable[None]]
Event = Callable[[str, int], None]


@dataclass
class LiveReader:
    playback: TwitchPlayback
    login: str
    quality: str = "source"
    end_grace: float = 60.0
    stall_timeout: float = 30.0
    segment_max_bytes: int = 64 * 1024 * 1024
    outage_limit: float = 300.0  # network errors/5xx for longer than this end the run (the task retries)
    on_event: Event | None = None  # ("ad" | "lost" | "discontinuity" | "reload", count)
    stats: ReaderStats = field(default_factory=ReaderStats)
    _ranges: dict[str, AdRange] = field(default_factory=dict)
    _init_cache: dict[str, bytes] = field(default_factory=dict)

    def _event(self, name: str, count: int = 1) -> None:
        if self.on_event is not None and count:
            self.on_event(name, count)

    async def run(self, position: Position, sink: Sink) -> None:
        """Record until the stream has ended (usher offline for `end_grace`, a new broadcast on
        the channel, or EXT-X-ENDLIST). Network trouble is waited out for `outage_limit`."""
        failing_since: float | None = None
        while True:
            try:
                await self._run(position, sink)
                return
            except Unavailable:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.outage_limit:
                    raise
                log.warning("live edge unreachable; retrying", extra={"component": "live"})
                await asyncio.sleep(1.0)

    async def _run(self, position: Position, sink: Sink) -> None:
        media_url: str | None = None
        offline_since: float | None = None
        last_new = time.monotonic()
        first_reload = position.program_date is None and position.sequence is None
        pending_discontinuity = False
        while True:
            if media_url is None:
                try:
                    rendition = await self.playback.rendition(self.login, self.quality)
                    if rendition.broadcast_id and position.broadcast_id not in (None, rendition.broadcast_id):
                        log.info("#%s started a new broadcast; this recording ends", self.login)
                        return
                    position.broadcast_id = position.broadcast_id or rendition.broadcast_id
                    media_url = rendition.url
                    self.stats.sessions += 1
                    offline_since = None
                    last_new = time.monotonic()
                except Offline:
                    now = time.monotonic()
                    offline_since = offline_since or now
                    if now - offline_since >= self.end_grace:
                        return
                    await asyncio.sleep(min(2.0, max(self.end_grace / 10, 0.2)))
                    continue
            try:
                text, url = await self.playback.media_playlist(media_url)
            except Offline:
                media_url = None  # the edge dropped it: ask usher (a new edge, or offline)
                continue
            playlist = parse_media_playlist(text, url)
            self.stats.reloads += 1
            self._event("reload")
            segments = self._classified(playlist)
            if first_reload and segments:
                # How far into the broadcast the window starts: 0 means from its first segment.
                position.elapsed = playlist.elapsed
            new = [s for s in segments if position.is_new(s)]
            if new and not first_reload:
                self._count_gap(position, segments, new[0])
            if segments:
                first_reload = False
            for segment in new:
                if segment.discontinuity:
                    pending_discontinuity = True
                if segment.ad:
                    self.stats.ads += 1
                    self.stats.ad_seconds += segment.duration
                    self._event("ad")
                    position.advance(segment)
                    continue
                data = await self.playback.segment(segment.uri, self.segment_max_bytes)
                if data is None:
                    self.stats.lost += 1
                    self._event("lost")
                    log.warning("segment %d expired before it was read", segment.sequence)
                    position.advance(segment)
                    pending_discontinuity = True
                    continue
                if segment.map_uri:
                    data = await self._init(segment.map_uri) + data
                if pending_discontinuity:
                    self.stats.discontinuities += 1
                    self._event("discontinuity")
                    pending_discontinuity = False
                position.advance(segment)
                await sink(segment, data, position)
            if new:
                last_new = time.monotonic()
            if playlist.ended:
                return
            if time.monotonic() - last_new > self.stall_timeout:
                media_url = None  # nothing new for a while: is it still live?
                continue
            await asyncio.sleep(_reload_delay(playlist))

    def _classified(self, playlist: MediaPlaylist) -> list[Segment]:
        """Ad ranges stay known after their DATERANGE tag has left the window."""
        for ad_range in playlist.ad_ranges:
            self._ranges[ad_range.id] = ad_range
        if len(self._ranges) > 1000:  # a long stream's old breaks: only recent ones matter
            for key in sorted(self._ranges, key=lambda k: self._ranges[k].start)[:-100]:
                del self._ranges[key]
        ranges = list(self._ranges.values())
        return [classify(segment, ranges) for segment in playlist.segments]

    def _count_gap(self, position: Position, segments: list[Segment], first_new: Segment) -> None:
        """Segments between the last handled one and the first new one were never seen."""
        index = segments.index(first_new)
        if index > 0:
            return  # the previous segment is still in the window: nothing was skipped
        missing = 0
        if position.program_date is not None and first_new.program_date is not None and first_new.duration > 0:
            gap = (first_new.program_date - position.program_date).total_seconds() - first_new.duration
            missing = max(0, round(gap / first_new.duration))
        elif position.sequence is not None and first_new.sequence > position.sequence + 1:
            missing = first_new.sequence - position.sequence - 1
        if missing:
            self.stats.lost += missing
            self._event("lost", missing)
            log.warning("%d segment(s) left the live window before they were read", missing)

    async def _init(self, uri: str) -> bytes:
        cached = self._init_cache.get(uri)
        if cached is None:
            data = await self.playback.segment(uri, self.segment_max_bytes)
            if data is None:
                raise Offline("twitch-playback", "the fMP4 init section is gone")
            self._init_cache.clear()
            cached = self._init_cache[uri] = data
        return cached


def _reload_delay(playlist: MediaPlaylist) -> float:
    """Half a target duration (HLS asks for at least one between reloads when nothing changed;
    half keeps a recorder at the live edge when segments are short)."""
    target = playlist.target_duration or (playlist.segments[-1].duration if playlist.segments else 2.0)
    return min(max(target / 2, 0.25), 5.0)
