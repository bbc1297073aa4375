"""Twitch live media playlists: segments, sequence numbers, discontinuities and ad markers.

Twitch stitches ads into the viewer's own media playlist (server-side ad insertion). A segment
is an ad when (as Streamlink's Twitch plugin decides, and as observed on Twitch's edge):
- its `#EXT-X-PROGRAM-DATE-TIME` falls inside an `#EXT-X-DATERANGE` whose CLASS is
  `twitch-stitched-ad` or whose ID starts with `stitched-ad-` (START-DATE + DURATION, or
  END-DATE; half open, so the first segment at the end of the range is content again), or
- its `#EXTINF` title starts with `Amazon` (ad segments carry `Amazon|<creative>`; live
  segments carry `live`).
`#EXT-X-TWITCH-PREFETCH` (low-latency prefetch URIs) is ignored: prefetch segments appear
as regular segments one or two reloads later, and a recorder does not need the lower latency.
`#EXT-X-TWITCH-ELAPSED-SECS` says how far into the broadcast the playlist's first segment is,
which tells whether a recording has its broadcast's first segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urljoin

from reelhouse.core.media.playlist import parse_attributes

AD_CLASS = "twitch-stitched-ad"
AD_ID_PREFIX = "stitched-ad-"
AD_TITLE_PREFIX = "Amazon"
MAX_PLAYLIST_BYTES = 2 * 1024 * 1024  # a live window is a few KB; anything near this is not one
MAX_SEGMENTS = 10_000


class PlaylistError(ValueError):
    """Not a usable HLS media playlist."""


@dataclass(frozen=True)
class Segment:
    sequence: int
    uri: str
    duration: float
    title: str
    program_date: datetime | None
    discontinuity: bool  # an EXT-X-DISCONTINUITY precedes it
    map_uri: str | None  # EXT-X-MAP (fMP4 init section), if any
    ad: bool = False


@dataclass(frozen=True)
class AdRange:
    id: str
    start: datetime
    end: datetime | None

    def covers(self, when: datetime) -> bool:
        return self.start <= when and (self.end is None or when < self.end)


@dataclass
class MediaPlaylist:
    target_duration: float
    media_sequence: int
    segments: list[Segment] = field(default_factory=list)
    ended: bool = False  # EXT-X-ENDLIST
    elapsed: float | None = None  # EXT-X-TWITCH-ELAPSED-SECS
    ad_ranges: list[AdRange] = field(default_factory=list)


def _date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().strip('"').replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("PROGRAM-DATE-TIME without a time zone")
    return parsed


def _unquote(value: str | None) -> str:
    return (value or "").strip('"')


def _ad_range(attributes: dict[str, str]) -> AdRange | None:
    range_id, range_class = _unquote(attributes.get("ID")), _unquote(attributes.get("CLASS"))
    if range_class != AD_CLASS and not range_id.startswith(AD_ID_PREFIX):
        return None
    start = _date(attributes["START-DATE"])
    end: datetime | None = None
    if "END-DATE" in attributes:
        end = _date(attributes["END-DATE"])
    else:
        seconds = attributes.get("DURATION") or attributes.get("PLANNED-DURATION")
        if seconds is not None:
            end = start + timedelta(seconds=float(_unquote(seconds)))
    return AdRange(range_id, start, end)


def parse_media_playlist(text: str, base_url: str) -> MediaPlaylist:
    """Parse one reload of a (live) media playlist; URIs resolved against `base_url`."""
    if len(text) > MAX_PLAYLIST_BYTES:
        raise PlaylistError("media playlist too large")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U)")
    if any(line.startswith("#EXT-X-STREAM-INF") for line in lines):
        raise PlaylistError("a master playlist, not a media playlist")
    playlist = MediaPlaylist(target_duration=0.0, media_sequence=0)
    sequence: int | None = None
    duration, title = 0.0, ""
    program_date: datetime | None = None
    discontinuity, map_uri, pending = False, None, False
    try:
        for line in lines[1:]:
            if line.startswith("#EXT-X-TARGETDURATION:"):
                playlist.target_duration = float(line.partition(":")[2])
            elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                playlist.media_sequence = int(line.partition(":")[2])
            elif line.startswith("#EXT-X-TWITCH-ELAPSED-SECS:"):
                playlist.elapsed = float(line.partition(":")[2])
            elif line.startswith("#EXT-X-DATERANGE:"):
                ad = _ad_range(parse_attributes(line.partition(":")[2]))
                if ad is not None:
                    playlist.ad_ranges.append(ad)
            elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                program_date = _date(line.partition(":")[2])
            elif line == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif line.startswith("#EXT-X-MAP:"):
                uri = _unquote(parse_attributes(line.partition(":")[2]).get("URI"))
                map_uri = urljoin(base_url, uri) if uri else None
            elif line.startswith("#EXTINF:"):
                value = line.partition(":")[2]
                seconds, _, title = value.partition(",")
                duration, pending = float(seconds), True
            elif line == "#EXT-X-ENDLIST":
                playlist.ended = True
            elif line.startswith("#"):
                continue  # other tags (EXT-X-TWITCH-PREFETCH, EXT-X-VERSION, ...) are not needed
            elif pending:
                if sequence is None:
                    sequence = playlist.media_sequence
                playlist.segments.append(
                    Segment(
                        sequence, urljoin(base_url, line), duration, title.strip(), program_date, discontinuity, map_uri
                    )
                )
                if len(playlist.segments) > MAX_SEGMENTS:
                    raise PlaylistError("media playlist has too many segments")
                sequence += 1
                if program_date is not None:
                    program_date += timedelta(seconds=duration)  # the next one's, unless it says
                pending, discontinuity, title = False, False, ""
    except (ValueError, KeyError) as exc:
        if isinstance(exc, PlaylistError):
            raise
        raise PlaylistError(f"malformed media playlist: {exc}") from None
    playlist.segments = [classify(segment, playlist.ad_ranges) for segment in playlist.segments]
    return playlist


def classify(segment: Segment, ranges: list[AdRange]) -> Segment:
    ad = segment.title.startswith(AD_TITLE_PREFIX)
    if not ad and segment.program_date is not None:
        ad = any(r.covers(segment.program_date) for r in ranges)
    if not ad:
        return segment
    return Segment(
        segment.sequence,
        segment.uri,
        segment.duration,
        segment.title,
        segment.program_date,
        segment.discontinuity,
        segment.map_uri,
        ad=True,
    )
