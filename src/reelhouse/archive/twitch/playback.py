"""Twitch live playback: a playback access token from GQL, the multivariant playlist from
usher, and the media playlists and segments of the chosen rendition.

The formats are Twitch's web player's (and Streamlink's):
- `POST {gql}` with `Client-ID` (the web player's public client id) and the persisted
  `PlaybackAccessToken` query: `{"operationName": "PlaybackAccessToken", "variables": {"isLive":
  true, "login": ..., "isVod": false, "vodID": "", "playerType": ...}, "extensions":
  {"persistedQuery": {"version": 1, "sha256Hash": ...}}}` answers
  `{"data": {"streamPlaybackAccessToken": {"value": "<json>", "signature": "<hex>"}}}`
  (`streamPlaybackAccessToken` is null for an unknown channel). An optional
  `Authorization: OAuth <token>` of a Turbo/subscribed account gets an ad-free token.
- `GET {usher}/api/channel/hls/{login}.m3u8?sig=&token=&allow_source=true&...` answers the
  multivariant playlist, or 404 with `[{"error": "twirp error not_found: transcode does not
  exist", "error_code": "transcode_does_not_exist", ...}]` while the channel is offline.
- The source rendition is the `#EXT-X-MEDIA` group `chunked` (NAME "... (source)"); without it
  the highest BANDWIDTH variant is taken.

Errors are provider errors: offline -> `Offline` (a NotFound), refused -> Rejected, network or
5xx -> Unavailable after the shared sender's retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from reelhouse.core.media.playlist import parse_attributes, parse_master_playlist
from reelhouse.core.providers.errors import NotFound, Rejected
from reelhouse.core.providers.http import ProviderHttp, RetryPolicy, provider_message
from reelhouse.core.telemetry.metrics import counter

PROVIDER = "twitch-playback"
DEFAULT_GQL_URL = "https://gql.twitch.tv/gql"
DEFAULT_USHER_BASE = "https://usher.ttvnw.net"
# The web player's public client id (what every Twitch web page sends; not a secret).
WEB_CLIENT_ID = "kimne78kx3ncx6brgo4mv6wki5h1ko"
PLAYBACK_QUERY_HASH = "0828119ded1c13477966434e15800ff57ddacf13ba1911c129dc2200705b0712"
SOURCE_GROUP = "chunked"
MAX_BODY = 2 * 1024 * 1024

PLAYBACK_CALLS = counter(
    "twitch_playback_calls_total",
    "Twitch playback calls (GQL, usher, media playlists, segments)",
    ("endpoint", "status"),
)


class Offline(NotFound):
    """The channel has no live transcode (usher 404 / media playlist gone)."""


@dataclass(frozen=True)
class Rendition:
    url: str
    name: str  # e.g. "1080p60 (source)"
    group: str  # e.g. "chunked"
    bandwidth: int
    resolution: str
    broadcast_id: str | None = None  # EXT-X-TWITCH-INFO's BROADCAST-ID: a new one is a new stream


def choose_rendition(text: str, base_url: str, quality: str = "source") -> Rendition:
    """The source (`chunked`) rendition, a named one (`720p60`), or the highest bandwidth."""
    names: dict[str, str] = {}
    broadcast_id: str | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-TWITCH-INFO:"):
            broadcast_id = parse_attributes(line.partition(":")[2]).get("BROADCAST-ID", "").strip('"') or None
        if line.startswith("#EXT-X-MEDIA:"):
            attributes = parse_attributes(line.partition(":")[2])
            if attributes.get("TYPE") == "VIDEO":
                names[attributes.get("GROUP-ID", "").strip('"')] = attributes.get("NAME", "").strip('"')
    master = parse_master_playlist(text)
    renditions = []
    for variant in master.variants:
        attributes = variant.attributes
        group = attributes.get("VIDEO", "").strip('"')
        try:
            bandwidth = int(attributes.get("BANDWIDTH", "0"))
        except ValueError:
            bandwidth = 0
        renditions.append(
            Rendition(
                urljoin(base_url, variant.uri),
                names.get(group, group),
                group,
                bandwidth,
                attributes.get("RESOLUTION", ""),
                broadcast_id,
            )
        )
    if not renditions:
        raise Rejected(PROVIDER, "usher answered a playlist without renditions")
    wanted = SOURCE_GROUP if quality in ("source", "best", "") else quality
    for rendition in renditions:
        if rendition.group == wanted or rendition.name.split(" ")[0] == wanted:
            return rendition
    return max(renditions, key=lambda r: r.bandwidth)


class TwitchPlayback:
    """One client per recording run; the caller closes it."""

    def __init__(
        self,
        *,
        gql_url: str = DEFAULT_GQL_URL,
        usher_base: str = DEFAULT_USHER_BASE,
        client_id: str = WEB_CLIENT_ID,
        oauth_token: str = "",
        player_type: str = "site",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gql_url = gql_url
        self.usher_base = usher_base.rstrip("/")
        self.client_id = client_id
        self._oauth_token = oauth_token
        self.player_type = player_type
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
        self._sender = ProviderHttp(PROVIDER, self._http, RetryPolicy(max_attempts=3), calls=PLAYBACK_CALLS)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def access_token(self, login: str) -> tuple[str, str]:
        """(token value, signature) for the channel's live stream."""
        headers = {"Client-ID": self.client_id}
        if self._oauth_token:
            headers["Authorization"] = f"OAuth {self._oauth_token}"
        body = {
            "operationName": "PlaybackAccessToken",
            "variables": {"isLive": True, "login": login, "isVod": False, "vodID": "", "playerType": self.player_type},
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": PLAYBACK_QUERY_HASH}},
        }
        response = await self._sender.send("POST", self.gql_url, what="gql", json=body, headers=headers)
        if response.status_code != 200:
            raise Rejected(PROVIDER, f"playback token: HTTP {response.status_code}: {provider_message(response)}")
        data = _json(response)
        token = (data.get("data") or {}).get("streamPlaybackAccessToken") if isinstance(data, dict) else None
        if not isinstance(token, dict) or not token.get("value") or not token.get("signature"):
            errors = data.get("errors") if isinstance(data, dict) else None
            if errors:
                raise Rejected(PROVIDER, f"playback token refused: {str(errors)[:200]}")
            raise NotFound(PROVIDER, f"no playback token for #{login} (unknown channel?)")
        return str(token["value"]), str(token["signature"])

    async def rendition(self, login: str, quality: str = "source") -> Rendition:
        """The media playlist URL of the live stream's rendition; Offline when not live."""
        value, signature = await self.access_token(login)
        params = {
            "sig": signature,
            "token": value,
            "allow_source": "true",
            "allow_audio_only": "true",
            "fast_bread": "true",
            "playlist_include_framerate": "true",
            "player_backend": "mediaplayer",
            "supported_codecs": "avc1",
            "p": str(random.randint(0, 9_999_999)),
        }
        url = f"{self.usher_base}/api/channel/hls/{login}.m3u8"
        response = await self._sender.send("GET", url, what="usher", params=params)
        if response.status_code == 404:
            raise Offline(PROVIDER, f"#{login} is not live (usher: {provider_message(response)})")
        if response.status_code != 200:
            raise Rejected(PROVIDER, f"usher: HTTP {response.status_code}: {provider_message(response)}")
        return choose_rendition(_text(response), str(response.url), quality)

    async def media_playlist(self, url: str) -> tuple[str, str]:
        """(text, final URL) of one reload; Offline once the transcode is gone."""
        response = await self._sender.send("GET", url, what="media_playlist")
        if response.status_code in (403, 404, 410):
            raise Offline(PROVIDER, f"media playlist answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise Rejected(PROVIDER, f"media playlist: HTTP {response.status_code}")
        return _text(response), str(response.url)

    async def segment(self, url: str, max_bytes: int) -> bytes | None:
        """A segment's bytes; None when it is gone already (expired from the edge)."""
        response = await self._sender.send("GET", url, what="segment")
        if response.status_code in (403, 404, 410):
            return None
        if response.status_code != 200:
            raise Rejected(PROVIDER, f"segment: HTTP {response.status_code}")
        if len(response.content) > max_bytes:
            raise Rejected(PROVIDER, f"segment larger than {max_bytes} bytes")
        return response.content


def _text(response: httpx.Response) -> str:
    if len(response.content) > MAX_BODY:
        raise Rejected(PROVIDER, "playlist too large")
    return response.text


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise Rejected(PROVIDER, "GQL answered something that is not JSON") from None
