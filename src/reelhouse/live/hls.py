"""Live HLS written by reelhouse, not by ffmpeg: ffmpeg writes segments into a scratch
directory, and each completed segment is uploaded to storage and appended to a playlist whose
state lives in storage next to it. So a run that takes over (another worker, after a SIGKILL)
continues the same playlist: media sequence numbers keep growing and its first segment carries
`#EXT-X-DISCONTINUITY`, and the player keeps playing instead of seeing a dead stream.

A track with a window is the live playlist (the last N segments; older ones are deleted from
storage a window later). A track without one is a recording (an EVENT playlist of everything).

Low-Latency HLS (a track with `part_target`): ffmpeg cuts short parts (one GOP each, so every
part starts with a key frame and decodes alone) and reelhouse groups them: each part is stored
and listed (`#EXT-X-PART`) as soon as it exists, and once a segment's worth is there their byte
concatenation (MPEG-TS concatenates) is stored as the parent segment. Players that do not know
LL-HLS ignore the part tags and play the parent segments as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelhouse.core.storage import ObjectNotFound, Storage

STATE_NAME = "state.json"
PLAYLIST_NAME = "index.m3u8"
PART_WINDOW_TARGETS = 3  # parts are listed for the last three target durations (RFC 8216bis 4.4.4.9)


@dataclass
class Part:
    uri: str
    duration: float


@dataclass
class Segment:
    uri: str
    duration: float
    discontinuity: bool = False
    parts: list[Part] = field(default_factory=list)


def part_uri(segment_uri: str, index: int) -> str:
    """Parts are named after their parent (`x-12.ts` -> `x-12.0.ts`), so the next part's name is
    known before it exists (the preload hint)."""
    return f"{segment_uri.removesuffix('.ts')}.{index}.ts"


@dataclass
class Track:
    folder: str  # storage folder of the playlist and its segments
    window: int | None
    segments: list[Segment] = field(default_factory=list)
    sequence: int = 0  # media sequence number of segments[0]
    discontinuity_sequence: int = 0
    retired: list[str] = field(default_factory=list)  # out of the window, deleted later
    ended: bool = False
    # LL-HLS: the longest part duration advertised (None: a regular playlist), the parts of the
    # segment being built (its URI is `pending_uri`; media sequence number `next_msn`) and the
    # name of the part ffmpeg will cut next.
    part_target: float | None = None
    pending: list[Part] = field(default_factory=list)
    pending_uri: str | None = None
    pending_discontinuity: bool = False
    hint: str | None = None
    retired_parts: dict[str, list[str]] = field(default_factory=dict)
    # (URI, last msn, last part) of the other renditions, for EXT-X-RENDITION-REPORT: set by
    # the transcode before each save, not kept in the state (a new run sets them again).
    reports: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def last_part(self) -> tuple[int, int] | None:
        """(media sequence number, index) of the last part listed."""
        if self.pending:
            return self.next_msn, len(self.pending) - 1
        if self.segments and self.segments[-1].parts:
            return self.next_msn - 1, len(self.segments[-1].parts) - 1
        return None

    @property
    def playlist_key(self) -> str:
        return f"{self.folder}/{PLAYLIST_NAME}"

    def add(self, segment: Segment) -> list[str]:
        """Append; returns the storage keys to delete now."""
        self.ended = False
        self.segments.append(segment)
        doomed: list[str] = []
        if self.window is not None:
            while len(self.segments) > self.window:
                old = self.segments.pop(0)
                self.sequence += 1
                if old.discontinuity:
                    self.discontinuity_sequence += 1
                self.retired.append(old.uri)
                if old.parts:
                    self.retired_parts[old.uri] = [p.uri for p in old.parts]
            while len(self.retired) > self.window:
                gone = self.retired.pop(0)
                doomed.append(f"{self.folder}/{gone}")
                doomed += [f"{self.folder}/{uri}" for uri in self.retired_parts.pop(gone, [])]
        return doomed

    @property
    def next_msn(self) -> int:
        """Media sequence number of the segment being built (the one after the last listed)."""
        return self.sequence + len(self.segments)

    def add_part(self, part: Part) -> None:
        self.ended = False
        self.pending.append(part)

    def close_pending(self) -> list[str]:
        """The pending parts become a segment (its bytes, the parts' concatenation, must be
        stored under `pending_uri` first); returns the storage keys to delete now."""
        if not self.pending or self.pending_uri is None:
            return []
        duration = round(sum(p.duration for p in self.pending), 6)
        segment = Segment(self.pending_uri, duration, self.pending_discontinuity, self.pending)
        self.pending, self.pending_uri, self.pending_discontinuity = [], None, False
        return self.add(segment)

    async def seal_pending(self, storage: Storage) -> list[str]:
        """Parts a previous run left without their parent (it died mid-segment, or the stream
        ended there): store the parent from the stored parts and list it."""
        if not self.pending or self.pending_uri is None:
            return []
        data = []
        for part in self.pending:
            async with contextlib.aclosing(storage.get(f"{self.folder}/{part.uri}")) as body:
                data.append(b"".join([chunk async for chunk in body]))
        await storage.put(f"{self.folder}/{self.pending_uri}", b"".join(data))
        return self.close_pending()

    def end(self) -> None:
        self.ended = True
        self.hint = None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def render(self) -> str:
        target = max([1, *(math.ceil(s.duration) for s in self.segments)])
        lines = ["#EXTM3U", "#EXT-X-VERSION:6", f"#EXT-X-TARGETDURATION:{target}"]
        if self.part_target is not None:
            return self._render_parts(lines, target)
        if self.window is None:
            lines.append("#EXT-X-PLAYLIST-TYPE:" + ("VOD" if self.ended else "EVENT"))
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{self.sequence}")
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        for segment in self.segments:
            if segment.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            lines.append(segment.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _render_parts(self, lines: list[str], target: int) -> str:
        # PART-TARGET bounds every part (a MUST): ffmpeg's parts are whole frames, so one may be
        # a frame longer than asked; the advertised target covers the longest one listed.
        longest = max([0.0, *(p.duration for s in self.segments for p in s.parts), *(p.duration for p in self.pending)])
        part_target = max(self.part_target or 0.0, longest)
        # Hold back three part targets (the spec asks at least two, recommends three).
        lines.append(f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * part_target:.3f}")
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={part_target:.3f}")
        if self.window is None:
            lines.append("#EXT-X-PLAYLIST-TYPE:" + ("VOD" if self.ended else "EVENT"))
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{self.sequence}")
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        # Parts of the segments that end within three target durations of the live edge.
        edge = sum(p.duration for p in self.pending)
        listed = 0
        for segment in reversed(self.segments):
            if edge >= PART_WINDOW_TARGETS * target:
                break
            edge += segment.duration
            listed += 1
        first_listed = len(self.segments) - listed
        for i, segment in enumerate(self.segments):
            if segment.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if i >= first_listed:
                lines += [_part_line(p) for p in segment.parts]
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            lines.append(segment.uri)
        if self.pending_discontinuity and self.pending:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [_part_line(p) for p in self.pending]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        elif self.hint:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{self.hint}"')
        # Where the other renditions stand, so a player switching to one can ask for its next
        # part at once (RFC 8216bis 4.4.5.4).
        lines += [f'#EXT-X-RENDITION-REPORT:URI="{u}",LAST-MSN={m},LAST-PART={k}' for u, m, k in self.reports]
        return "\n".join(lines) + "\n"

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "segments": [
                [s.uri, s.duration, s.discontinuity, *([[[p.uri, p.duration] for p in s.parts]] if s.parts else [])]
                for s in self.segments
            ],
            "sequence": self.sequence,
            "discontinuity_sequence": self.discontinuity_sequence,
            "retired": self.retired,
            "ended": self.ended,
        }
        if self.part_target is not None or self.pending or self.retired_parts:
            state["ll"] = {
                "part_target": self.part_target,
                "pending": [[p.uri, p.duration] for p in self.pending],
                "pending_uri": self.pending_uri,
                "pending_discontinuity": self.pending_discontinuity,
                "hint": self.hint,
                "retired_parts": self.retired_parts,
            }
        return state

    @classmethod
    async def load(cls, storage: Storage, folder: str, window: int | None) -> Track:
        track = cls(folder, window)
        chunks = []
        try:
            async with contextlib.aclosing(storage.get(f"{folder}/{STATE_NAME}")) as body:
                async for chunk in body:
                    chunks.append(chunk)
        except ObjectNotFound:
            return track
        data = json.loads(b"".join(chunks))
        track.segments = [
            Segment(str(row[0]), float(row[1]), bool(row[2]), [Part(str(u), float(d)) for u, d in row[3]])
            if len(row) > 3
            else Segment(str(row[0]), float(row[1]), bool(row[2]))
            for row in data["segments"]
        ]
        track.sequence = int(data["sequence"])
        track.discontinuity_sequence = int(data["discontinuity_sequence"])
        track.retired = [str(u) for u in data["retired"]]
        track.ended = bool(data["ended"])
        if ll := data.get("ll"):
            track.part_target = None if ll["part_target"] is None else float(ll["part_target"])
            track.pending = [Part(str(u), float(d)) for u, d in ll["pending"]]
            track.pending_uri = ll["pending_uri"]
            track.pending_discontinuity = bool(ll["pending_discontinuity"])
            track.hint = ll["hint"]
            track.retired_parts = {str(k): [str(u) for u in v] for k, v in ll["retired_parts"].items()}
        return track

    async def save(self, storage: Storage) -> None:
        # Segments first, then the state, then the playlist: a reader never sees a missing segment.
        await storage.put(f"{self.folder}/{STATE_NAME}", json.dumps(self.state()).encode())
        await storage.put(self.playlist_key, self.render().encode())


def _part_line(part: Part) -> str:
    # Every part starts with a key frame (one GOP per part): INDEPENDENT=YES on all of them.
    return f'#EXT-X-PART:DURATION={part.duration:.3f},URI="{part.uri}",INDEPENDENT=YES'


def parse_local_playlist(text: str) -> list[tuple[float, str]]:
    """(duration, file name) of the completed segments an ffmpeg HLS playlist lists."""
    found: list[tuple[float, str]] = []
    duration: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXTINF:"):
            with contextlib.suppress(ValueError):
                duration = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            found.append((duration, line.rsplit("/", 1)[-1]))
            duration = None
    return found


class LocalOutput:
    """One ffmpeg HLS output directory feeding one track. With `parts_per_segment`, ffmpeg's
    segments are LL-HLS parts, grouped that many to a parent segment."""

    def __init__(self, directory: Path, track: Track, name_prefix: str, *, parts_per_segment: int = 0,
                 part_target: float | None = None, on_saved: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.directory = directory
        self.track = track
        self.name_prefix = name_prefix
        self.seen: set[str] = set()
        # A previous run wrote this track: mark the seam (its leftover parts become a segment).
        self.continues = bool(track.segments or track.pending)
        self.added = 0
        self.parts_per_segment = parts_per_segment
        self.part_target = part_target if parts_per_segment else None
        self.pending_data: list[bytes] = []  # the bytes of track.pending, for their parent
        self.on_saved = on_saved
        self.siblings: list[LocalOutput] = []  # the other renditions' outputs (rendition reports)

    async def prepare(self, storage: Storage) -> None:
        """Before ffmpeg starts: seal what a previous run left half-built, and switch the track
        to (or from) LL-HLS as this run's settings say."""
        sealed = bool(self.track.pending)
        doomed = await self.track.seal_pending(storage)
        changed = sealed or self.track.part_target != self.part_target
        self.track.part_target = self.part_target
        self.track.hint = None if self.part_target is None else part_uri(self._segment_uri(), 0)
        if changed and (self.track.segments or doomed):
            await self._save(storage, doomed)

    def _segment_uri(self) -> str:
        return f"{self.name_prefix}{self.track.next_msn}.ts"

    async def _save(self, storage: Storage, doomed: list[str]) -> None:
        if self.part_target is not None:
            self.track.reports = [
                (f"../{other.directory.name}/{PLAYLIST_NAME}", *last)
                for other in self.siblings
                if (last := other.track.last_part) is not None
            ]
        await self.track.save(storage)
        if self.on_saved is not None:
            self.on_saved(self.track.folder)
        for key in doomed:
            await storage.delete(key)

    async def sync(self, storage: Storage) -> int:
        playlist = self.directory / PLAYLIST_NAME
        try:
            text = playlist.read_text()
        except FileNotFoundError:
            return 0
        added = 0
        doomed: list[str] = []
        for duration, name in parse_local_playlist(text):
            if name in self.seen:
                continue
            path = self.directory / name
            if not path.is_file():
                self.seen.add(name)  # ffmpeg already deleted it: we fell behind by a window
                continue
            if self.parts_per_segment:
                doomed += await self._add_part(storage, path, duration)
            else:
                uri = f"{self.name_prefix}{name}"
                await storage.put(f"{self.track.folder}/{uri}", path)
                discontinuity = self.continues and self.added == 0
                doomed += self.track.add(Segment(uri, duration, discontinuity))
            self.seen.add(name)
            self.added += 1
            added += 1
            with contextlib.suppress(OSError):
                path.unlink()
        if added:
            await self._save(storage, doomed)
        elif doomed:
            for key in doomed:
                await storage.delete(key)
        return added

    async def _add_part(self, storage: Storage, path: Path, duration: float) -> list[str]:
        track = self.track
        if not track.pending:
            track.pending_uri = self._segment_uri()
            track.pending_discontinuity = self.continues and self.added == 0
        assert track.pending_uri is not None
        data = await asyncio.to_thread(path.read_bytes)
        uri = part_uri(track.pending_uri, len(track.pending))
        await storage.put(f"{track.folder}/{uri}", data)
        track.add_part(Part(uri, duration))
        self.pending_data.append(data)
        doomed: list[str] = []
        if len(track.pending) >= self.parts_per_segment:
            doomed = await self._close(storage)
        track.hint = part_uri(track.pending_uri or self._segment_uri(), len(track.pending))
        return doomed

    async def _close(self, storage: Storage) -> list[str]:
        track = self.track
        assert track.pending_uri is not None
        await storage.put(f"{track.folder}/{track.pending_uri}", b"".join(self.pending_data))
        self.pending_data = []
        return track.close_pending()

    async def flush(self, storage: Storage) -> None:
        """ffmpeg ended: the last parts become a (shorter) segment."""
        if self.track.pending:
            doomed = await self._close(storage)
            self.track.hint = None
            await self._save(storage, doomed)


def master_playlist(variants: list[tuple[str, int, int, int]]) -> str:
    """(name, bandwidth, width, height) -> a master playlist of `<name>/index.m3u8` variants."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for name, bandwidth, width, height in variants:
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={width}x{height}")
        lines.append(f"{name}/{PLAYLIST_NAME}")
    return "\n".join(lines) + "\n"
