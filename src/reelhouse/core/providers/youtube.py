"""YouTube Data API v3: Google OAuth tokens and the resumable upload protocol.

The upload is split so that a crash never costs a re-upload (vod-tender restarted from byte 0):
`start_session()` creates the session and returns its URI without sending media bytes; the
caller persists that URI, then calls `upload()`, which first asks the server how much it already
has and continues from there. Any number of client instances (or processes) can resume the same
session URI. Tokens are loaded and saved through caller-supplied callbacks (the database,
encrypted) and never appear in logs, exception messages or `repr()`.

Used by archive (VOD uploads) and by encode's YouTube publisher, hence in core. Errors are
provider errors: an exhausted daily quota is `RateLimited` until midnight Pacific.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx

from reelhouse.core.providers.errors import AuthExpired, RateLimited, Rejected, Unavailable
from reelhouse.core.providers.http import ProviderHttp, RetryPolicy
from reelhouse.core.telemetry.metrics import counter

log = logging.getLogger(__name__)

PROVIDER = "youtube"

DEFAULT_API_BASE = "https://www.googleapis.com"
DEFAULT_OAUTH_BASE = "https://oauth2.googleapis.com"
DEFAULT_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/youtube.upload",)
# The protocol requires every chunk except the last to be a multiple of 256 KiB.
UPLOAD_GRANULARITY = 256 * 1024
DEFAULT_CHUNK_SIZE = 32 * UPLOAD_GRANULARITY  # 8 MiB: few round trips, bounded memory
# YouTube's daily quota resets at midnight Pacific time.
QUOTA_TIMEZONE = ZoneInfo("America/Los_Angeles")
_QUOTA_REASONS = {"quotaExceeded", "uploadLimitExceeded", "dailyLimitExceeded"}
_SHORT_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


OAUTH_TOKEN_REFRESH = counter("oauth_token_refresh_total", "OAuth token refresh attempts", ("provider", "status"))


class UploadSessionExpired(Unavailable):
    """The resumable session URI is gone (404/410, sessions live about a week): start a new
    session; the bytes sent so far are lost but the video was never created."""


@dataclass(frozen=True)
class YouTubeTokens:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    scopes: tuple[str, ...] = ()

    def expires_within(self, window: timedelta) -> bool:
        return self.expires_at - datetime.now(UTC) <= window


@dataclass(frozen=True)
class VideoMetadata:
    title: str
    description: str = ""
    tags: tuple[str, ...] = ()
    category_id: str = "20"  # Gaming: what Twitch VODs mostly are
    privacy_status: str = "private"

    def to_resource(self) -> dict[str, Any]:
        snippet: dict[str, Any] = {"title": self.title, "description": self.description, "categoryId": self.category_id}
        if self.tags:
            snippet["tags"] = list(self.tags)
        return {"snippet": snippet, "status": {"privacyStatus": self.privacy_status}}


@dataclass(frozen=True)
class UploadStatus:
    offset: int  # bytes the server has committed; the next chunk starts here
    video_id: str | None  # set once the upload is complete


ProgressCallback = Callable[[int, int], Awaitable[None] | None]
LoadTokens = Callable[[], Awaitable[YouTubeTokens | None]]
SaveTokens = Callable[[YouTubeTokens], Awaitable[None]]


def next_quota_reset(now: datetime | None = None) -> datetime:
    """The next midnight in America/Los_Angeles (DST-aware), as an aware UTC datetime."""
    local = (now or datetime.now(UTC)).astimezone(QUOTA_TIMEZONE)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=QUOTA_TIMEZONE)
    return midnight.astimezone(UTC)


def _google_error(response: httpx.Response) -> tuple[str, set[str]]:
    """(message, reasons) from Google's error JSON, or from OAuth's `error_description`."""
    try:
        body = response.json()
    except ValueError:
        return (response.text[:300] or response.reason_phrase), set()
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        reasons = {str(item.get("reason")) for item in error.get("errors") or [] if isinstance(item, Mapping)}
        return str(error.get("message") or response.reason_phrase)[:300], reasons
    if isinstance(body, Mapping) and isinstance(error, str):
        return str(body.get("error_description") or error)[:300], {error}
    return response.reason_phrase, set()


class YouTubeClient:
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        load_tokens: LoadTokens,
        save_tokens: SaveTokens,
        redirect_uri: str | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        api_base: str = DEFAULT_API_BASE,
        oauth_base: str = DEFAULT_OAUTH_BASE,
        authorize_url: str = DEFAULT_AUTHORIZE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = httpx.Timeout(30.0, write=300.0, read=300.0),
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        refresh_window: timedelta = timedelta(minutes=2),
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self._load_tokens = load_tokens
        self._save_tokens = save_tokens
        self.redirect_uri = redirect_uri
        self.scopes = tuple(scopes)
        self.api_base = api_base.rstrip("/")
        self.oauth_base = oauth_base.rstrip("/")
        self._authorize_url = authorize_url
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        policy = RetryPolicy(
            max_attempts=max_attempts, backoff_base=backoff_base, backoff_cap=backoff_cap, default_retry_after=60.0
        )
        self._sender = ProviderHttp(PROVIDER, self._http, policy)
        self._max_attempts = max_attempts
        self._refresh_window = refresh_window
        self._tokens: YouTubeTokens | None = None
        self._token_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> YouTubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- OAuth ------------------------------------------------------------------------------

    def authorize_url(self, state: str) -> str:
        """Google consent URL; offline + forced consent so Google always returns a refresh token."""
        if not self.redirect_uri:
            raise ValueError("redirect_uri is required for the authorization-code flow")
        params = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(self.scopes),
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": state,
        }
        return f"{self._authorize_url}?{urlencode(params)}"

    async def exchange_code(self, code: str) -> YouTubeTokens:
        """Exchange the callback's code, save the tokens through `save_tokens`, return them."""
        if not self.redirect_uri:
            raise ValueError("redirect_uri is required for the authorization-code flow")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        tokens = await self._token_request(form, what="code exchange", previous_refresh=None)
        async with self._token_lock:
            await self._save_tokens(tokens)
            self._tokens = tokens
        return tokens

    async def refresh_tokens(self) -> YouTubeTokens:
        """Refresh now (the background refresher's entry point); saved through `save_tokens`."""
        async with self._token_lock:
            await self._ensure_loaded()
            return await self._refresh_locked()

    async def _ensure_loaded(self) -> YouTubeTokens:
        if self._tokens is None:
            self._tokens = await self._load_tokens()
        if self._tokens is None:
            raise AuthExpired(PROVIDER, "not authorized: no stored OAuth token (run the /auth/youtube flow)")
        return self._tokens

    # TokenSource (core/providers/http.py): the stored user token, refreshed when near expiry
    # or rejected.
    async def access_token(self) -> str:
        async with self._token_lock:
            tokens = await self._ensure_loaded()
            if tokens.expires_within(self._refresh_window):
                tokens = await self._refresh_locked()
            return tokens.access_token

    async def token_rejected(self, token: str) -> None:
        async with self._token_lock:
            # Another request may already have replaced the rejected token.
            if self._tokens is not None and self._tokens.access_token == token:
                await self._refresh_locked()

    async def _refresh_locked(self) -> YouTubeTokens:
        current = self._tokens
        assert current is not None
        if not current.refresh_token:
            raise AuthExpired(PROVIDER, "token expired and no refresh token is stored: re-authorize")
        try:
            form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
            tokens = await self._token_request(form, what="token refresh", previous_refresh=current.refresh_token)
            await self._save_tokens(tokens)
        except Exception:
            OAUTH_TOKEN_REFRESH.labels(provider="youtube", status="failure").inc()
            raise
        OAUTH_TOKEN_REFRESH.labels(provider="youtube", status="success").inc()
        self._tokens = tokens
        return tokens

    async def _token_request(self, form: dict[str, str], *, what: str, previous_refresh: str | None) -> YouTubeTokens:
        data = {**form, "client_id": self.client_id, "client_secret": self._client_secret}
        response = await self._sender.send("POST", f"{self.oauth_base}/token", what=f"oauth {what}", data=data)
        if response.status_code != 200:
            # invalid_grant (revoked/expired refresh token, spent code), invalid_client: a human must act.
            self._raise_for(response, f"oauth {what}")
        body = response.json()
        scope = body.get("scope") or ""
        return YouTubeTokens(
            access_token=str(body["access_token"]),
            # Google omits refresh_token on refresh responses: the old one stays valid.
            refresh_token=body.get("refresh_token") or previous_refresh,
            expires_at=datetime.now(UTC) + timedelta(seconds=int(body.get("expires_in") or 3600)),
            scopes=tuple(scope.split()) if isinstance(scope, str) else tuple(scope),
        )

    # -- resumable upload -------------------------------------------------------------------

    async def start_session(self, metadata: VideoMetadata, *, size: int, content_type: str = "video/mp4") -> str:
        """Create a resumable upload session; returns the session URI to persist before upload().
        A lost response to this POST can leave an unused session behind on Google's side; it
        holds no bytes and expires, and no video exists until an upload completes."""
        if size <= 0:
            raise Rejected(PROVIDER, "refusing to upload an empty file")
        url = f"{self.api_base}/upload/youtube/v3/videos?uploadType=resumable&part=snippet,status"
        headers = {"X-Upload-Content-Length": str(size), "X-Upload-Content-Type": content_type}
        response = await self._sender.send(
            "POST", url, what="upload session", token=self, json=metadata.to_resource(), headers=headers
        )
        if response.status_code != 200 or "location" not in response.headers:
            self._raise_for(response, "upload session")
        return str(response.url.join(response.headers["location"]))

    async def upload_status(self, session_uri: str, size: int) -> UploadStatus:
        """Ask a session how many bytes it holds (`Content-Range: bytes */size`)."""
        # The bearer token goes with every session request: never to a host other than the API's
        # (a tampered stored URI must not leak it).
        if httpx.URL(session_uri).netloc != httpx.URL(self.api_base).netloc:
            raise Rejected(PROVIDER, "upload session URI does not point at the configured API host")
        headers = {"Content-Range": f"bytes */{size}"}
        response = await self._sender.send(
            "PUT", session_uri, what="upload status", token=self, content=b"", headers=headers
        )
        return self._status_from(response, size, "upload status")

    async def upload(
        self,
        session_uri: str,
        path: Path | str,
        *,
        on_progress: ProgressCallback | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        content_type: str = "video/mp4",
    ) -> str:
        """Send `path` into the session, resuming at the server's offset; returns the video id.
        `on_progress(committed_bytes, total)` runs after every acknowledged chunk."""
        if chunk_size <= 0 or chunk_size % UPLOAD_GRANULARITY:
            raise ValueError(f"chunk_size must be a positive multiple of {UPLOAD_GRANULARITY}")
        size = Path(path).stat().st_size
        status = await self.upload_status(session_uri, size)
        failures = 0
        with open(path, "rb") as media:
            while status.video_id is None:
                offset = status.offset
                end = min(offset + chunk_size, size)
                media.seek(offset)
                chunk = media.read(end - offset)
                headers = {"Content-Range": f"bytes {offset}-{end - 1}/{size}", "Content-Type": content_type}
                try:
                    response = await self._sender.send(
                        "PUT", session_uri, what="upload chunk", token=self, content=chunk, headers=headers, retry=False
                    )
                except Unavailable as exc:
                    cause = exc.reason
                else:
                    if response.status_code >= 500:
                        cause = f"HTTP {response.status_code}"
                    else:
                        status = self._status_from(response, size, "upload chunk")
                        if status.video_id is not None or status.offset > offset:
                            failures = 0
                            if on_progress is not None:
                                await _maybe_await(on_progress(status.offset, size))
                            continue
                        cause = "no bytes committed"
                # The chunk may be partly committed: back off, then trust the server's offset.
                failures += 1
                if failures >= self._max_attempts:
                    raise Unavailable(PROVIDER, f"upload chunk: {cause} after {failures} attempts")
                await self._sender.sleep_after_failure("upload chunk", cause, failures)
                status = await self.upload_status(session_uri, size)
        return status.video_id

    def _status_from(self, response: httpx.Response, size: int, what: str) -> UploadStatus:
        if response.status_code in (200, 201):
            try:
                return UploadStatus(offset=size, video_id=str(response.json()["id"]))
            except (ValueError, KeyError, TypeError):
                raise Rejected(PROVIDER, f"{what}: upload finished but no video id in the response") from None
        if response.status_code == 308:
            # No Range header means the server holds nothing yet.
            match = _RANGE.fullmatch(response.headers.get("range", "").strip())
            return UploadStatus(offset=int(match.group(2)) + 1 if match else 0, video_id=None)
        self._raise_for(response, what, session=True)

    # -- transport + error classification -------------------------------------------------------

    def _raise_for(self, response: httpx.Response, what: str, *, session: bool = False) -> NoReturn:
        status = response.status_code
        message, reasons = _google_error(response)
        if status == 403 and reasons & _QUOTA_REASONS:
            raise RateLimited(PROVIDER, f"{what}: quota exhausted ({', '.join(sorted(reasons))})", next_quota_reset())
        if status == 403 and reasons & _SHORT_RATE_REASONS:
            raise RateLimited(PROVIDER, f"{what}: rate limited", datetime.now(UTC) + timedelta(seconds=60))
        if status in (404, 410) and session:
            raise UploadSessionExpired(PROVIDER, f"{what}: upload session no longer exists (HTTP {status})")
        if status >= 500:
            raise Unavailable(PROVIDER, f"{what}: HTTP {status}: {message}")
        if status == 401 or "invalid_grant" in reasons:
            raise AuthExpired(PROVIDER, f"{what}: HTTP {status}: {message}", status)
        raise Rejected(PROVIDER, f"{what}: HTTP {status}: {message}", status)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
