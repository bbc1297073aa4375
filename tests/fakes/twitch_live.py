"""Wire-level fake of Twitch's live playback: GQL's PlaybackAccessToken, usher's multivariant
playlist, and the edge's sliding-window media playlists and segments, with ads stitched in
the way Twitch marks them. Mounted on `FakeTwitch` (tests/fakes/helix.py), so one loopback
server is Helix, GQL, usher and the edge; Helix reports the channel live while its broadcast
runs.

A `Broadcast` is real MPEG-TS segments (ffmpeg, `generate_hls`) played out in real time
(or `speed` times faster): content parts (each part its own encode, so a new part restarts
timestamps like an encoder restart) and ad breaks (a pre-roll before the first content segment
and mid-rolls after given content segments), in one viewer timeline:
- media playlist: `#EXT-X-TARGETDURATION`, `#EXT-X-MEDIA-SEQUENCE` (index of the window's first
  entry), `#EXT-X-TWITCH-ELAPSED-SECS` (broadcast seconds before it), a window of the
  last `window` available entries, each with `#EXT-X-PROGRAM-DATE-TIME`, `#EXT-X-DISCONTINUITY`
  where the source changes (into and out of every ad break, between content parts), and two
  `#EXT-X-TWITCH-PREFETCH` URIs of the next entries;
- ad breaks: `#EXT-X-DATERANGE:ID="stitched-ad-<unix>-<seconds>",CLASS="twitch-stitched-ad",
  START-DATE=...,DURATION=...,X-TV-TWITCH-AD-ROLL-TYPE="PREROLL"|"MIDROLL",...`; pre-roll ad
  segments are titled `Amazon|<creative id>`, mid-roll ones carry only the date range (so both
  of Twitch's markers are exercised); content segments are titled `live`.
After the last entry the playlist lingers `linger` seconds (no new segments), then the
transcode is gone: media playlists and usher answer 404, Helix lists the channel offline.
Every segment request is recorded as (kind, index) so a test can tell which ones were fetched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

WEB_CLIENT_ID = "kimne78kx3ncx6brgo4mv6wki5h1ko"
PLAYBACK_QUERY_HASH = "0828119ded1c13477966434e15800ff57ddacf13ba1911c129dc2200705b0712"
M3U8 = "application/vnd.apple.mpegurl"


def read_segments(directory: Path) -> list[tuple[Path, float]]:
    """(file, EXTINF seconds) of an ffmpeg HLS directory, in order."""
    entries, duration = [], 0.0
    for line in (directory / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line.partition(":")[2].split(",")[0])
        elif line and not line.startswith("#"):
            entries.append((directory / line, duration))
    return entries


@dataclass
class Entry:
    kind: str  # "content" | "ad"
    path: Path
    duration: float
    start: float  # seconds into the viewer timeline
    part: int  # source: content part number, or -1 - break number for ads
    ad_break: int | None = None


@dataclass
class Broadcast:
    parts: list[list[tuple[Path, float]]]
    ad_segments: list[tuple[Path, float]] = field(default_factory=list)
    preroll: int = 0  # ad segments before the first content segment
    midrolls: dict[int, int] = field(default_factory=dict)  # after content segment n: ad segments
    window: int = 6
    speed: float = 1.0
    linger: float = 2.0
    entries: list[Entry] = field(default_factory=list)
    started: float | None = None  # time.monotonic()
    started_at: datetime | None = None  # the stream clock's origin (PROGRAM-DATE-TIME)
    breaks: list[tuple[int, int, str]] = field(default_factory=list)  # (first entry, count, roll type)
    broadcast_id: str = "1"

    def __post_init__(self) -> None:
        position = 0.0
        ad_cursor = 0

        def add_break(count: int, roll: str) -> None:
            nonlocal position, ad_cursor
            self.breaks.append((len(self.entries), count, roll))
            number = len(self.breaks) - 1
            for _ in range(count):
                path, seconds = self.ad_segments[ad_cursor % len(self.ad_segments)]
                ad_cursor += 1
                self.entries.append(Entry("ad", path, seconds, position, -1 - number, number))
                position += seconds

        if self.preroll:
            add_break(self.preroll, "PREROLL")
        content = 0
        for part_number, part in enumerate(self.parts):
            for path, seconds in part:
                self.entries.append(Entry("content", path, seconds, position, part_number))
                position += seconds
                content += 1
                if content in self.midrolls:
                    add_break(self.midrolls[content], "MIDROLL")

    @property
    def content_seconds(self) -> float:
        return sum(e.duration for e in self.entries if e.kind == "content")

    @property
    def timeline_seconds(self) -> float:
        return sum(e.duration for e in self.entries)

    def elapsed_before(self, index: int) -> float:
        """Broadcast seconds before entry `index` (the broadcast's clock: ads do not count)."""
        return sum(e.duration for e in self.entries[:index] if e.kind == "content")

    def start(self, started_at: datetime | None = None) -> None:
        self.started = time.monotonic()
        self.started_at = (started_at or datetime.now(UTC)).replace(microsecond=0)

    def clock(self) -> float:
        assert self.started is not None
        return (time.monotonic() - self.started) * self.speed

    def available(self) -> int:
        """Entries whose end has been reached."""
        now = self.clock()
        return sum(1 for e in self.entries if e.start + e.duration <= now)

    def over(self) -> bool:
        return self.started is not None and self.clock() >= self.timeline_seconds + self.linger * self.speed

    def date(self, seconds: float) -> str:
        assert self.started_at is not None
        when = self.started_at + timedelta(seconds=seconds)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class TwitchLiveEdge:
    """The playback endpoints; `FakeTwitch` routes /gql, /api/channel/hls/... and /v1/... here."""

    def __init__(self, client_id: str = WEB_CLIENT_ID) -> None:
        self.client_id = client_id
        self._secret = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self.broadcasts: dict[str, Broadcast] = {}
        self._playlists: dict[str, tuple[str, str]] = {}  # token -> (login, rendition)
        self._segments: dict[str, tuple[str, int]] = {}  # token -> (login, entry index)
        self.segment_requests: list[tuple[str, str, int]] = []  # (login, kind, entry index)
        self.token_requests: list[dict[str, Any]] = []
        self.usher_requests = 0

    def fetched(self, login: str, kind: str) -> list[int]:
        with self._lock:
            return [index for who, k, index in self.segment_requests if who == login and k == kind]

    def is_live(self, login: str) -> bool:
        broadcast = self.broadcasts.get(login)
        return broadcast is not None and broadcast.started is not None and not broadcast.over()

    # -- GQL --------------------------------------------------------------------------------------
    async def gql(self, request: Request) -> Response:
        if request.headers.get("client-id") != self.client_id:
            return JSONResponse(
                {"error": "Bad Request", "status": 400, "message": 'The "Client-ID" header is invalid.'}, 400
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"errors": [{"message": "invalid JSON"}]}, 400)
        persisted = (body.get("extensions") or {}).get("persistedQuery") or {}
        if body.get("operationName") != "PlaybackAccessToken" or persisted.get("sha256Hash") != PLAYBACK_QUERY_HASH:
            return JSONResponse({"errors": [{"message": "PersistedQueryNotFound"}], "extensions": {}})
        variables = body.get("variables") or {}
        login = str(variables.get("login", "")).lower()
        with self._lock:
            self.token_requests.append(variables)
        if login not in self.broadcasts:
            return JSONResponse({"data": {"streamPlaybackAccessToken": None}, "extensions": {}})
        value = json.dumps(
            {
                "adblock": False,
                "authorization": {"forbidden": False, "reason": ""},
                "channel": login,
                "channel_id": 1000,
                "expires": int(time.time()) + 1200,
                "hide_ads": False,
                "player_type": variables.get("playerType", "site"),
                "private": {"allowed_to_view": True},
                "server_ads": True,
                "show_ads": True,
                "subscriber": False,
                "turbo": False,
                "version": 2,
            },
            separators=(",", ":"),
        )
        signature = hmac.new(self._secret, value.encode(), hashlib.sha1).hexdigest()
        return JSONResponse(
            {
                "data": {
                    "streamPlaybackAccessToken": {
                        "value": value,
                        "signature": signature,
                        "__typename": "PlaybackAccessToken",
                    }
                },
                "extensions": {"durationMilliseconds": 12, "operationName": "PlaybackAccessToken"},
            }
        )

    # -- usher ------------------------------------------------------------------------------------
    async def usher(self, request: Request) -> Response:
        login = request.path_params["login"].lower()
        token, sig = request.query_params.get("token", ""), request.query_params.get("sig", "")
        expected = hmac.new(self._secret, token.encode(), hashlib.sha1).hexdigest()
        with self._lock:
            self.usher_requests += 1
        if not hmac.compare_digest(expected, sig):
            return JSONResponse(
                [
                    {
                        "url": str(request.url.path),
                        "error": "Unauthorized",
                        "error_code": "unauthorized",
                        "type": "error",
                    }
                ],
                403,
            )
        try:
            if json.loads(token).get("channel") != login:
                raise ValueError
        except ValueError:
            return JSONResponse(
                [
                    {
                        "url": str(request.url.path),
                        "error": "token does not match",
                        "error_code": "unauthorized",
                        "type": "error",
                    }
                ],
                403,
            )
        if not self.is_live(login):
            return JSONResponse(
                [
                    {
                        "url": str(request.url.path),
                        "error": "twirp error not_found: transcode does not exist",
                        "error_code": "transcode_does_not_exist",
                        "type": "error",
                    }
                ],
                404,
            )
        base = str(request.base_url).rstrip("/")
        source, low = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        with self._lock:
            self._playlists[source] = (login, "chunked")
            self._playlists[low] = (login, "360p30")
        text = "\n".join(
            [
                "#EXTM3U",
                '#EXT-X-TWITCH-INFO:NODE="video-edge-fake.loopback",MANIFEST-NODE-TYPE="weaver_cluster",'
                f'SERVER-TIME="{time.time():.2f}",USER-IP="127.0.0.1",SERVING-ID="{secrets.token_hex(16)}",'
                f'CLUSTER="loopback",ABS="false",BROADCAST-ID="{self.broadcasts[login].broadcast_id}",STREAM-TIME="0.0",MANIFEST-CLUSTER="loopback"',
                '#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID="chunked",NAME="180p15 (source)",AUTOSELECT=YES,DEFAULT=YES',
                '#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x180,CODECS="avc1.42C00C,mp4a.40.2",'
                'VIDEO="chunked",FRAME-RATE=15.000',
                f"{base}/v1/playlist/{source}.m3u8",
                '#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID="360p30",NAME="360p30",AUTOSELECT=YES,DEFAULT=YES',
                '#EXT-X-STREAM-INF:BANDWIDTH=100000,RESOLUTION=160x90,CODECS="avc1.42C00C,mp4a.40.2",'
                'VIDEO="360p30",FRAME-RATE=15.000',
                f"{base}/v1/playlist/{low}.m3u8",
                "",
            ]
        )
        return Response(text, media_type=M3U8)

    # -- edge ---------------------------------------------------------------------------------------
    async def media_playlist(self, request: Request) -> Response:
        with self._lock:
            found = self._playlists.get(request.path_params["token"])
        if found is None:
            return Response("Not Found", 404)
        login, _rendition = found
        broadcast = self.broadcasts.get(login)
        if broadcast is None or not self.is_live(login):
            return Response("Not Found", 404)
        available = broadcast.available()
        first = max(0, available - broadcast.window)
        base = str(request.base_url).rstrip("/")
        target = max((e.duration for e in broadcast.entries), default=2.0)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{int(target + 0.999)}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            f"#EXT-X-TWITCH-ELAPSED-SECS:{broadcast.elapsed_before(first):.3f}",
            f"#EXT-X-TWITCH-TOTAL-SECS:{broadcast.clock():.3f}",
            f'#EXT-X-DATERANGE:ID="playlist-creation-{int(broadcast.started_at.timestamp())}",'  # type: ignore[union-attr]
            f'CLASS="timestamp",START-DATE="{broadcast.date(0)}",END-ON-NEXT=YES,X-SERVER-TIME="{time.time():.2f}"',
        ]
        for first_entry, count, roll in broadcast.breaks:
            last_entry = first_entry + count - 1
            if last_entry < first or first_entry >= available:
                continue
            start = broadcast.entries[first_entry].start
            seconds = sum(e.duration for e in broadcast.entries[first_entry : first_entry + count])
            lines.append(
                f'#EXT-X-DATERANGE:ID="stitched-ad-{int(broadcast.started_at.timestamp() + start)}-{int(seconds)}",'  # type: ignore[union-attr]
                f'CLASS="twitch-stitched-ad",START-DATE="{broadcast.date(start)}",DURATION={seconds:.3f},'
                f'X-TV-TWITCH-AD-ROLL-TYPE="{roll}",X-TV-TWITCH-AD-POD-LENGTH="{count}",'
                f'X-TV-TWITCH-AD-LINE-ITEM-ID="{first_entry}",X-TV-TWITCH-AD-CREATIVE-ID="{1000 + first_entry}"'
            )
        for index in range(first, available):
            entry = broadcast.entries[index]
            previous = broadcast.entries[index - 1] if index > 0 else None
            if previous is not None and previous.part != entry.part:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{broadcast.date(entry.start)}")
            title = "live"
            if entry.kind == "ad":
                title = f"Amazon|{1000 + index}" if broadcast.breaks[entry.ad_break or 0][2] == "PREROLL" else ""
            lines.append(f"#EXTINF:{entry.duration:.3f},{title}")
            lines.append(f"{base}/v1/segment/{self._segment_token(login, index)}.ts")
        for index in range(available, min(available + 2, len(broadcast.entries))):
            lines.append(f"#EXT-X-TWITCH-PREFETCH:{base}/v1/segment/{self._segment_token(login, index)}.ts")
        return Response("\n".join(lines) + "\n", media_type=M3U8)

    def _segment_token(self, login: str, index: int) -> str:
        token = hashlib.sha256(self._secret + f"{login}:{index}".encode()).hexdigest()[:32]
        with self._lock:
            self._segments[token] = (login, index)
        return token

    async def segment(self, request: Request) -> Response:
        with self._lock:
            found = self._segments.get(request.path_params["token"])
        if found is None:
            return Response("Not Found", 404)
        login, index = found
        broadcast = self.broadcasts.get(login)
        if broadcast is None:
            return Response("Not Found", 404)
        entry = broadcast.entries[index]
        with self._lock:
            self.segment_requests.append((login, entry.kind, index))
        return Response(entry.path.read_bytes(), media_type="video/mp2t")
