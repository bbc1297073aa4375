"""Wire-level fake of Twitch's id.twitch.tv token endpoint and the Helix endpoints reelhouse
uses (users, videos, streams), following Twitch's documented request/response formats.

Serve `FakeTwitch().app` with `tests.fakes.server.serve` and point clients at
`{base_url}/oauth2` (auth) and `{base_url}/helix` (API). Tests configure channels, videos and
live state, arm faults, and assert on the recorded calls.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.twitch_live import Broadcast, TwitchLiveEdge

_HELIX_MAX_FIRST = 100


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # Helix's error envelope: {"error": <reason phrase>, "status": <code>, "message": <text>}
    phrases = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    body = {"error": phrases.get(status, "Error"), "status": status, "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class RecordedCall:
    method: str
    path: str  # e.g. "/helix/videos"
    query: dict[str, list[str]]
    status: int
    client_id: str | None
    bearer: str | None


@dataclass
class _Token:
    kind: str  # "app" or "user"
    expires_at: float
    scopes: tuple[str, ...] = ()
    revoked: bool = False


@dataclass
class _Faults:
    rate_limited: int = 0
    rate_limit_reset_in: float = 60.0
    server_errors: int = 0
    server_error_status: int = 500


@dataclass
class _Channel:
    user_id: str
    login: str
    display_name: str
    live: dict[str, Any] | None = None
    videos: list[dict[str, Any]] = field(default_factory=list)


class FakeTwitch:
    def __init__(
        self,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        *,
        token_lifetime: int = 3600,
        redirect_uri: str = "http://127.0.0.1/auth/twitch/callback",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.redirect_uri = redirect_uri
        self.calls: list[RecordedCall] = []
        self.token_requests: list[str] = []  # grant_type of every accepted token request
        self.rate_limit_resets: list[int] = []  # Ratelimit-Reset values sent with 429s
        self._lock = threading.Lock()
        self._faults = _Faults()
        self._tokens: dict[str, _Token] = {}
        self._refresh_tokens: dict[str, tuple[str, ...]] = {}
        self._codes: dict[str, tuple[str, ...]] = {}
        self._channels: dict[str, _Channel] = {}
        self._cursors: dict[str, tuple[str, str, int]] = {}  # cursor -> (user_id, type, offset)
        self._next_id = 1000
        self.live_edge = TwitchLiveEdge()  # GQL, usher and the HLS edge (tests/fakes/twitch_live.py)
        self.app = Starlette(
            routes=[
                Route("/gql", self.live_edge.gql, methods=["POST"]),
                Route("/api/channel/hls/{login}.m3u8", self.live_edge.usher, methods=["GET"]),
                Route("/v1/playlist/{token}.m3u8", self.live_edge.media_playlist, methods=["GET"]),
                Route("/v1/segment/{token}.ts", self.live_edge.segment, methods=["GET"]),
                Route("/oauth2/token", self._token, methods=["POST"]),
                Route("/helix/users", self._users, methods=["GET"]),
                Route("/helix/videos", self._videos, methods=["GET"]),
                Route("/helix/streams", self._streams, methods=["GET"]),
            ]
        )

    # -- configuration ------------------------------------------------------------------------

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_channel(self, login: str, *, display_name: str | None = None) -> str:
        with self._lock:
            channel = _Channel(self._new_id(), login.lower(), display_name or login)
            self._channels[channel.login] = channel
            return channel.user_id

    def add_video(
        self,
        login: str,
        *,
        title: str = "Stream",
        created_at: datetime | None = None,
        duration: str = "1h2m3s",
        type: str = "archive",
        description: str = "",
        video_id: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            channel = self._channels[login.lower()]
            created = created_at or datetime.now(UTC)
            vid = video_id or self._new_id()
            video = {
                "id": vid,
                "stream_id": self._new_id() if type == "archive" else None,
                "user_id": channel.user_id,
                "user_login": channel.login,
                "user_name": channel.display_name,
                "title": title,
                "description": description,
                "created_at": _rfc3339(created),
                "published_at": _rfc3339(created),
                "url": f"https://www.twitch.tv/videos/{vid}",
                "thumbnail_url": f"https://static-cdn.jtvnw.net/cf_vods/{vid}/%{{width}}x%{{height}}.jpg",
                "viewable": "public",
                "view_count": 0,
                "language": "en",
                "type": type,
                "duration": duration,
                "muted_segments": None,
            }
            channel.videos.append(video)
            return video

    def add_archives(self, login: str, count: int, *, newest: datetime | None = None) -> list[dict[str, Any]]:
        """`count` archives one day apart; returned newest first, the order Helix lists them."""
        top = newest or datetime(2024, 6, 1, 18, 0, tzinfo=UTC)
        videos = [self.add_video(login, title=f"Archive {i}", created_at=top - timedelta(days=i)) for i in range(count)]
        return videos

    def set_live(self, login: str, *, title: str = "Live now", started_at: datetime | None = None) -> dict[str, Any]:
        with self._lock:
            channel = self._channels[login.lower()]
            channel.live = {
                "id": self._new_id(),
                "user_id": channel.user_id,
                "user_login": channel.login,
                "user_name": channel.display_name,
                "game_id": "509658",
                "game_name": "Just Chatting",
                "type": "live",
                "title": title,
                "viewer_count": 1,
                "started_at": _rfc3339(started_at or datetime.now(UTC)),
                "language": "en",
                "thumbnail_url": "",
                "tags": [],
                "is_mature": False,
            }
            return channel.live

    def start_broadcast(self, login: str, broadcast: Broadcast, *, title: str = "Live now") -> dict[str, Any]:
        """Go live with `broadcast` on the edge; Helix lists the stream until it is over."""
        live = self.set_live(login, title=title)
        broadcast.start(datetime.fromisoformat(live["started_at"].replace("Z", "+00:00")))
        broadcast.broadcast_id = live["id"]
        with self._lock:
            self.live_edge.broadcasts[login.lower()] = broadcast
        return live

    def set_offline(self, login: str) -> None:
        with self._lock:
            self._channels[login.lower()].live = None

    def issue_authorization_code(self, scopes: tuple[str, ...] = ("chat:read", "chat:edit")) -> str:
        """What Twitch hands the browser after consent; exchangeable once."""
        code = secrets.token_hex(15)
        with self._lock:
            self._codes[code] = scopes
        return code

    # -- fault injection ------------------------------------------------------------------------

    def rate_limit_next(self, n: int = 1, *, reset_in: float = 60.0) -> None:
        """The next `n` Helix calls answer 429 with `Ratelimit-Reset` = now + reset_in (unix s)."""
        with self._lock:
            self._faults.rate_limited = n
            self._faults.rate_limit_reset_in = reset_in

    def fail_next(self, n: int = 1, *, status: int = 500) -> None:
        with self._lock:
            self._faults.server_errors = n
            self._faults.server_error_status = status

    def expire_app_tokens(self) -> None:
        """Every app token issued so far now gets 401, as after expiry or revocation."""
        with self._lock:
            for token in self._tokens.values():
                if token.kind == "app":
                    token.revoked = True

    def helix_calls(self, endpoint: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self.calls if endpoint is None or c.path == f"/helix/{endpoint}"]

    # -- token endpoint ---------------------------------------------------------------------------

    async def _token(self, request: Request) -> JSONResponse:
        form = dict(request.query_params) | dict(await request.form())
        if form.get("client_id") != self.client_id:
            return JSONResponse({"status": 400, "message": "invalid client"}, status_code=400)
        if form.get("client_secret") != self.client_secret:
            return JSONResponse({"status": 403, "message": "invalid client secret"}, status_code=403)
        grant = form.get("grant_type")
        with self._lock:
            if grant == "client_credentials":
                self.token_requests.append(grant)
                return JSONResponse(
                    {"access_token": self._issue("app", ()), "expires_in": self.token_lifetime, "token_type": "bearer"}
                )
            if grant == "authorization_code":
                scopes = self._codes.pop(str(form.get("code")), None)
                if scopes is None or form.get("redirect_uri") != self.redirect_uri:
                    return JSONResponse({"status": 400, "message": "Invalid authorization code"}, status_code=400)
            elif grant == "refresh_token":
                scopes = self._refresh_tokens.pop(str(form.get("refresh_token")), None)
                if scopes is None:
                    return JSONResponse({"status": 400, "message": "Invalid refresh token"}, status_code=400)
            else:
                return JSONResponse({"status": 400, "message": "unsupported grant type"}, status_code=400)
            self.token_requests.append(str(grant))
            refresh = secrets.token_hex(25)
            self._refresh_tokens[refresh] = scopes
            return JSONResponse(
                {
                    "access_token": self._issue("user", scopes),
                    "refresh_token": refresh,
                    "expires_in": self.token_lifetime,
                    "scope": list(scopes),
                    "token_type": "bearer",
                }
            )

    def _issue(self, kind: str, scopes: tuple[str, ...]) -> str:
        token = secrets.token_hex(15)
        self._tokens[token] = _Token(kind, time.time() + self.token_lifetime, scopes)
        return token

    # -- Helix ----------------------------------------------------------------------------------

    async def _helix(self, request: Request, handler: Any) -> JSONResponse:
        """Auth check, faults, then the endpoint; every call is recorded with its status."""
        client_id = request.headers.get("client-id")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        with self._lock:
            token = self._tokens.get(bearer or "")
            if client_id != self.client_id:
                response = _error(
                    401, "Client ID and OAuth token do not match" if client_id else "Client-Id header required"
                )
            elif token is None or token.revoked or token.expires_at <= time.time():
                response = _error(401, "Invalid OAuth token")
            elif self._faults.rate_limited > 0:
                self._faults.rate_limited -= 1
                reset = math.ceil(time.time() + self._faults.rate_limit_reset_in)
                self.rate_limit_resets.append(reset)
                response = _error(
                    429,
                    "Too Many Requests",
                    headers={"Ratelimit-Limit": "800", "Ratelimit-Remaining": "0", "Ratelimit-Reset": str(reset)},
                )
            elif self._faults.server_errors > 0:
                self._faults.server_errors -= 1
                response = _error(self._faults.server_error_status, "Internal Server Error")
            else:
                response = handler(request)
            query: dict[str, list[str]] = {}
            for key, value in request.query_params.multi_items():
                query.setdefault(key, []).append(value)
            self.calls.append(
                RecordedCall(request.method, request.url.path, query, response.status_code, client_id, bearer)
            )
            return response

    async def _users(self, request: Request) -> JSONResponse:
        def handle(req: Request) -> JSONResponse:
            logins = req.query_params.getlist("login")
            ids = req.query_params.getlist("id")
            data = [
                {
                    "id": c.user_id,
                    "login": c.login,
                    "display_name": c.display_name,
                    "type": "",
                    "broadcaster_type": "",
                    "description": "",
                    "profile_image_url": "",
                    "offline_image_url": "",
                    "view_count": 0,
                    "created_at": "2016-01-01T00:00:00Z",
                }
                for c in self._channels.values()
                if c.login in [login.lower() for login in logins] or c.user_id in ids
            ]
            return JSONResponse({"data": data})

        return await self._helix(request, handle)

    async def _videos(self, request: Request) -> JSONResponse:
        def handle(req: Request) -> JSONResponse:
            params = req.query_params
            ids = params.getlist("id")
            if ids:  # lookup by id: unknown ids are absent; all unknown is a 404, as Twitch does
                found = [v for c in self._channels.values() for v in c.videos if v["id"] in ids]
                if not found:
                    return _error(404, "Not Found")
                return JSONResponse({"data": found, "pagination": {}})
            user_id = params.get("user_id")
            if not user_id:
                return _error(400, 'Missing required parameter "user_id"')
            video_type = params.get("type", "all")
            try:
                first = int(params.get("first", "20"))
            except ValueError:
                return _error(400, 'The parameter "first" was malformed: must be an integer')
            if not 1 <= first <= _HELIX_MAX_FIRST:
                return _error(400, 'The parameter "first" was malformed: the value must be less than or equal to 100')
            offset = 0
            if after := params.get("after"):
                cursor = self._cursors.get(after)
                if cursor is None or cursor[:2] != (user_id, video_type):
                    return _error(400, "invalid cursor")
                offset = cursor[2]
            channel = next((c for c in self._channels.values() if c.user_id == user_id), None)
            videos = (
                [] if channel is None else [v for v in channel.videos if video_type == "all" or v["type"] == video_type]
            )
            videos.sort(key=lambda v: (v["created_at"], v["id"]), reverse=True)
            page = videos[offset : offset + first]
            pagination: dict[str, str] = {}
            if offset + first < len(videos):
                cursor_value = secrets.token_urlsafe(24)  # opaque, like Twitch's
                self._cursors[cursor_value] = (user_id, video_type, offset + first)
                pagination["cursor"] = cursor_value
            return JSONResponse({"data": page, "pagination": pagination})

        return await self._helix(request, handle)

    async def _streams(self, request: Request) -> JSONResponse:
        def handle(req: Request) -> JSONResponse:
            logins = [login.lower() for login in req.query_params.getlist("user_login")]
            if len(logins) > _HELIX_MAX_FIRST:
                return _error(400, 'The parameter "user_login" may only be specified 100 times')
            for login in logins:  # a broadcast that is over ends the stream
                over = login in self.live_edge.broadcasts and not self.live_edge.is_live(login)
                if over and (channel := self._channels.get(login)) is not None:
                    channel.live = None
            data = [c.live for login in logins if (c := self._channels.get(login)) and c.live]
            return JSONResponse({"data": data, "pagination": {}})

        return await self._helix(request, handle)
