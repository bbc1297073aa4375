"""Twitch Helix client: users, videos (paginated), live streams.

One client per process is meant to be shared: it caches the app access token until shortly
before expiry (vod-tender fetched a new one every cycle) and caches login -> user id. Errors are
provider errors (core/providers/errors.py): 429 -> RateLimited (after at most one short in-call
wait), 5xx and network errors -> bounded backoff then Unavailable, 401 -> one token refresh,
an unknown channel -> NotFound, other 4xx -> Rejected carrying Twitch's message.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from reelhouse.archive.twitch.oauth import DEFAULT_AUTH_BASE, PROVIDER, OAuthTokens, TwitchOAuth
from reelhouse.core.providers.errors import NotFound, Rejected, Unavailable
from reelhouse.core.providers.http import ProviderHttp, RetryPolicy, provider_message
from reelhouse.core.telemetry.metrics import counter

DEFAULT_API_BASE = "https://api.twitch.tv/helix"
MAX_PAGE_SIZE = 100  # Helix's documented maximum for `first`

HELIX_API_CALLS = counter(
    "helix_api_calls_total", "Twitch Helix API calls by endpoint and HTTP status", ("endpoint", "status")
)

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_twitch_duration(text: str) -> int:
    """`3h15m42s` / `15m2s` / `42s` -> seconds. Strict: an unknown format is an API change we
    want to hear about, not a silently wrong duration (vod-tender skipped unknown characters)."""
    stripped = text.strip()
    match = _DURATION.fullmatch(stripped)
    if not stripped or match is None:
        raise ValueError(f"not a Twitch duration: {text!r}")
    hours, minutes, seconds = (int(group) if group else 0 for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class _HelixModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class HelixUser(_HelixModel):
    id: str
    login: str
    display_name: str = ""


class HelixVideo(_HelixModel):
    id: str
    user_id: str
    user_login: str
    title: str
    description: str = ""
    created_at: datetime
    published_at: datetime | None = None
    url: str
    thumbnail_url: str = ""
    duration: int  # seconds, parsed from Helix's "3h15m42s"
    type: str
    stream_id: str | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> Any:
        return parse_twitch_duration(value) if isinstance(value, str) else value

    @field_validator("published_at", "stream_id", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        # Helix sends "" rather than null for absent stream ids on some video types.
        return None if value == "" else value


class HelixStream(_HelixModel):
    id: str
    user_id: str
    user_login: str
    started_at: datetime
    title: str = ""
    type: str = "live"


@dataclass(frozen=True)
class VideoPage:
    videos: list[HelixVideo]
    cursor: str | None  # pass as `after` for the next page; None on the last page


_Model = TypeVar("_Model", bound=_HelixModel)


class HelixClient:
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        auth_base: str = DEFAULT_AUTH_BASE,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 2.0,
        max_inline_wait: float = 3.0,
        token_refresh_margin: float = 60.0,
    ) -> None:
        self.client_id = client_id
        self.api_base = api_base.rstrip("/")
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._oauth = TwitchOAuth(
            client_id,
            client_secret,
            auth_base=auth_base,
            http=self._http,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        policy = RetryPolicy(
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_inline_wait=max_inline_wait,
        )
        self._sender = ProviderHttp(PROVIDER, self._http, policy, calls=HELIX_API_CALLS)
        self._refresh_margin = token_refresh_margin
        self._token: OAuthTokens | None = None
        self._token_refresh_after: datetime | None = None
        self._token_lock = asyncio.Lock()
        self._users: dict[str, HelixUser] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> HelixClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public API -------------------------------------------------------------------------

    async def get_user(self, login: str) -> HelixUser:
        """Resolve a channel login; cached for the client's lifetime (ids never change)."""
        key = login.strip().lower()
        cached = self._users.get(key)
        if cached is not None:
            return cached
        body = await self._get("users", [("login", key)])
        users = self._parse(HelixUser, body, "users")
        if not users:
            raise NotFound(PROVIDER, f"channel {login!r} does not exist", 404)
        self._users[key] = users[0]
        return users[0]

    async def list_videos(
        self, user_id: str, *, type: str = "archive", first: int = 20, after: str | None = None
    ) -> VideoPage:
        """One page of a channel's videos, newest first (Helix's default `sort=time`)."""
        if not 1 <= first <= MAX_PAGE_SIZE:
            raise ValueError(f"first must be within 1..{MAX_PAGE_SIZE}, got {first}")
        params = [("user_id", user_id), ("type", type), ("first", str(first))]
        if after:
            params.append(("after", after))
        body = await self._get("videos", params)
        cursor = (body.get("pagination") or {}).get("cursor") or None
        return VideoPage(self._parse(HelixVideo, body, "videos"), cursor)

    async def get_video(self, video_id: str) -> HelixVideo:
        """One video by id (NotFound when Twitch does not have it, or no longer)."""
        try:
            body = await self._get("videos", [("id", video_id)])
        except Rejected as exc:
            if exc.status == 404:
                raise NotFound(PROVIDER, f"video {video_id} does not exist", 404) from None
            raise
        videos = self._parse(HelixVideo, body, "videos")
        if not videos:
            raise NotFound(PROVIDER, f"video {video_id} does not exist", 404)
        return videos[0]

    async def iter_video_pages(
        self, user_id: str, *, type: str = "archive", page_size: int = MAX_PAGE_SIZE, after: str | None = None
    ) -> AsyncIterator[VideoPage]:
        """Pages until Helix stops returning a cursor (or returns an empty page). Yielding pages
        lets a backfill persist each cursor as it goes and resume there after a restart."""
        while True:
            page = await self.list_videos(user_id, type=type, first=page_size, after=after)
            yield page
            if not page.videos or page.cursor is None:
                return
            after = page.cursor

    async def iter_videos(
        self,
        user_id: str,
        *,
        type: str = "archive",
        page_size: int = MAX_PAGE_SIZE,
        after: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[HelixVideo]:
        if limit is not None and limit <= 0:
            return
        # Never ask for more than needed: a `limit` smaller than a page costs one small request.
        size = min(page_size, limit) if limit is not None else page_size
        yielded = 0
        async for page in self.iter_video_pages(user_id, type=type, page_size=size, after=after):
            for video in page.videos:
                yield video
                yielded += 1
                if limit is not None and yielded >= limit:
                    return

    async def get_streams(self, user_logins: Iterable[str]) -> list[HelixStream]:
        """Live streams among `user_logins`; offline channels are simply absent."""
        logins = [login.strip().lower() for login in user_logins if login.strip()]
        streams: list[HelixStream] = []
        for start in range(0, len(logins), MAX_PAGE_SIZE):
            batch = logins[start : start + MAX_PAGE_SIZE]
            params = [("user_login", login) for login in batch] + [("first", str(MAX_PAGE_SIZE))]
            body = await self._get("streams", params)
            streams.extend(self._parse(HelixStream, body, "streams"))
        return streams

    # -- plumbing -----------------------------------------------------------------------------

    async def _app_token(self) -> str:
        token = self._token
        if token is not None and not self._token_is_stale():
            return token.access_token
        async with self._token_lock:
            # Double-checked: callers that queued on the lock reuse the token the first one fetched.
            if self._token is None or self._token_is_stale():
                fetched = await self._oauth.client_credentials()
                now = datetime.now(UTC)
                lifetime = (fetched.expires_at - now).total_seconds()
                # Refresh `margin` early, but never so early that a short-lived token is refetched
                # on every call.
                early = min(self._refresh_margin, lifetime / 2)
                self._token = fetched
                self._token_refresh_after = now + timedelta(seconds=lifetime - early)
            assert self._token is not None
            return self._token.access_token

    def _token_is_stale(self) -> bool:
        return self._token_refresh_after is None or datetime.now(UTC) >= self._token_refresh_after

    # TokenSource (core/providers/http.py): the app token, dropped when Helix rejects it.
    async def access_token(self) -> str:
        return await self._app_token()

    async def token_rejected(self, token: str) -> None:
        # Only drop the token the server rejected; a concurrent caller may already hold a new one.
        if self._token is not None and self._token.access_token == token:
            self._token = None
            self._token_refresh_after = None

    async def _get(self, endpoint: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        headers = {"Client-Id": self.client_id}
        response = await self._sender.send(
            "GET", f"{self.api_base}/{endpoint}", what=endpoint, token=self, params=list(params), headers=headers
        )
        if response.status_code != 200:
            raise Rejected(
                PROVIDER,
                f"helix {endpoint}: HTTP {response.status_code}: {provider_message(response)}",
                response.status_code,
            )
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise Unavailable(PROVIDER, f"helix {endpoint}: 200 with a non-JSON body") from None
        return body

    @staticmethod
    def _parse(model: type[_Model], body: dict[str, Any], endpoint: str) -> list[_Model]:
        try:
            return [model.model_validate(item) for item in body.get("data") or []]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise Rejected(PROVIDER, f"helix {endpoint}: unexpected payload ({where}: {first['msg']})") from None
