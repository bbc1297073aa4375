"""Wire-level fake of Google's OAuth token endpoint and the YouTube Data API v3 resumable
upload protocol (session POST -> Location; chunk PUTs answered 308 + `Range` until the last,
then 200 with the video resource; `Content-Range: bytes */total` status queries).

Uploaded bytes are written to a directory on disk so tests can check content by sha256, and
every session is kept so tests can assert "one session per VOD". Faults: quota 403, 5xx on
chunks, a connection dropped mid-chunk (the aligned prefix received is committed, as Google
may do), expired sessions (404) and expired access tokens (401).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GRANULARITY = 256 * 1024
_CHUNK_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_STATUS_RANGE = re.compile(r"bytes \*/(\d+)")
UPLOAD_PATH = "/upload/youtube/v3/videos"


def google_error(status: int, message: str, reason: str, domain: str = "global") -> JSONResponse:
    """Google's documented error shape: {"error": {"code", "message", "errors": [{reason, domain}]}}."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }
    return JSONResponse(body, status_code=status)


@dataclass
class FakeUploadSession:
    upload_id: str
    resource: dict[str, Any]
    total: int
    content_type: str
    path: Path
    committed: int = 0
    bytes_received: int = 0  # every media byte that arrived, re-sends included
    video_id: str | None = None
    expired: bool = False

    @property
    def title(self) -> str:
        return str(self.resource.get("snippet", {}).get("title", ""))

    @property
    def tags(self) -> list[str]:
        return list(self.resource.get("snippet", {}).get("tags", []))


@dataclass
class _Faults:
    quota_on_session: int = 0
    quota_on_chunk: int = 0
    quota_reason: str = "quotaExceeded"
    chunk_errors: int = 0
    chunk_error_status: int = 503
    chunk_drops: int = 0


@dataclass
class _Access:
    expires_at: float
    revoked: bool = False


class FakeYouTube:
    def __init__(
        self,
        client_id: str = "fake-google-client",
        client_secret: str = "fake-google-secret",
        *,
        storage_dir: Path | None = None,
        token_lifetime: int = 3599,
        redirect_uri: str = "http://127.0.0.1/auth/youtube/callback",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.token_lifetime = token_lifetime
        self.storage_dir = storage_dir or Path(tempfile.mkdtemp(prefix="fake-youtube-"))
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.sessions: dict[str, FakeUploadSession] = {}
        self.videos: dict[str, dict[str, Any]] = {}
        self.refresh_count = 0
        # (upload_id, Content-Range, status) of every PUT to a session URI, in arrival order
        self.session_requests: list[tuple[str, str, int]] = []
        self.faults = _Faults()
        self._lock = threading.Lock()
        self._access: dict[str, _Access] = {}
        self._refresh_tokens: set[str] = set()
        self._codes: set[str] = set()
        routes = [
            Route("/token", self._token, methods=["POST"]),
            Route(UPLOAD_PATH, self._create_session, methods=["POST"]),
            Route(UPLOAD_PATH, self._session_put, methods=["PUT"]),
        ]
        self._starlette = Starlette(routes=routes)

    # -- OAuth setup ---------------------------------------------------------------------------

    def add_refresh_token(self) -> str:
        """A refresh token as if the OAuth flow had been completed earlier."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._refresh_tokens.add(token)
        return token

    def issue_authorization_code(self) -> str:
        code = "4/" + secrets.token_urlsafe(24)
        with self._lock:
            self._codes.add(code)
        return code

    def expire_access_tokens(self) -> None:
        with self._lock:
            for access in self._access.values():
                access.revoked = True

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._refresh_tokens.clear()

    # -- faults ------------------------------------------------------------------------------

    def quota_exceeded_next(self, n: int = 1, *, on: str = "session", reason: str = "quotaExceeded") -> None:
        """The next `n` session creations (`on="session"`) or chunk PUTs (`on="chunk"`) get 403."""
        with self._lock:
            if on == "session":
                self.faults.quota_on_session = n
            else:
                self.faults.quota_on_chunk = n
            self.faults.quota_reason = reason

    def fail_next_chunks(self, n: int = 1, *, status: int = 503) -> None:
        with self._lock:
            self.faults.chunk_errors = n
            self.faults.chunk_error_status = status

    def drop_next_chunk(self, n: int = 1) -> None:
        """Close the connection part-way through the next `n` chunk uploads."""
        with self._lock:
            self.faults.chunk_drops = n

    def expire_session(self, upload_id: str | None = None) -> None:
        with self._lock:
            for session in self.sessions.values():
                if upload_id is None or session.upload_id == upload_id:
                    session.expired = True

    # -- assertions --------------------------------------------------------------------------

    def sessions_for_title(self, title: str) -> list[FakeUploadSession]:
        with self._lock:
            return [s for s in self.sessions.values() if s.title == title]

    def sessions_for_tag(self, tag: str) -> list[FakeUploadSession]:
        with self._lock:
            return [s for s in self.sessions.values() if tag in s.tags]

    def session_for_uri(self, session_uri: str) -> FakeUploadSession:
        upload_id = re.search(r"upload_id=([^&]+)", session_uri)
        assert upload_id, session_uri
        return self.sessions[upload_id.group(1)]

    def content_sha256(self, upload_id: str) -> str:
        return hashlib.sha256(self.sessions[upload_id].path.read_bytes()).hexdigest()

    # -- ASGI: the drop fault needs raw control of the connection --------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "PUT" and self._take_drop(scope):
            await self._drop_mid_chunk(scope, receive, send)
            return
        await self._starlette(scope, receive, send)

    @property
    def app(self) -> FakeYouTube:
        return self

    def _take_drop(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope["headers"])
        if not _CHUNK_RANGE.fullmatch(headers.get(b"content-range", b"").decode()):
            return False
        with self._lock:
            if self.faults.chunk_drops <= 0:
                return False
            self.faults.chunk_drops -= 1
            return True

    async def _drop_mid_chunk(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        start, end, _ = map(int, _CHUNK_RANGE.fullmatch(headers[b"content-range"].decode()).groups())
        upload_id = re.search(rb"upload_id=([^&]+)", scope["query_string"]).group(1).decode()
        want = (end - start + 1) // 2
        received = bytearray()
        while len(received) < want:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            session = self.sessions[upload_id]
            keep = len(received) // GRANULARITY * GRANULARITY
            session.bytes_received += len(received)
            if start <= session.committed and keep:
                self._write(session, start, bytes(received[:keep]))
        # Start a response and return without a body: uvicorn closes the socket mid-exchange.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})

    # -- token endpoint ----------------------------------------------------------------------

    async def _token(self, request: Request) -> JSONResponse:
        form = await request.form()
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"}, status_code=401)
        grant = form.get("grant_type")
        with self._lock:
            body: dict[str, Any] = {
                "expires_in": self.token_lifetime,
                "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/youtube.upload",
            }
            if grant == "refresh_token":
                if form.get("refresh_token") not in self._refresh_tokens:
                    return JSONResponse(
                        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
                        status_code=400,
                    )
                self.refresh_count += 1
            elif grant == "authorization_code":
                if form.get("code") not in self._codes or form.get("redirect_uri") != self.redirect_uri:
                    return JSONResponse({"error": "invalid_grant", "error_description": "Bad Request"}, status_code=400)
                self._codes.discard(str(form.get("code")))
                refresh = secrets.token_urlsafe(32)
                self._refresh_tokens.add(refresh)
                body["refresh_token"] = refresh
            else:
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            access = "ya29." + secrets.token_urlsafe(32)
            self._access[access] = _Access(time.time() + self.token_lifetime)
            body["access_token"] = access
            return JSONResponse(body)

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        access = self._access.get(auth[7:]) if auth.startswith("Bearer ") else None
        if access is None or access.revoked or access.expires_at <= time.time():
            return google_error(401, "Request had invalid authentication credentials.", "authError")
        return None

    # -- resumable upload --------------------------------------------------------------------

    async def _create_session(self, request: Request) -> Response:
        if request.query_params.get("uploadType") != "resumable":
            return google_error(400, "Only resumable uploads are supported by this fake", "badRequest")
        try:
            resource = json.loads(await request.body())
            total = int(request.headers["x-upload-content-length"])
        except (ValueError, KeyError):
            return google_error(400, "Missing X-Upload-Content-Length or invalid metadata JSON", "badRequest")
        with self._lock:
            if denied := self._unauthorized(request):
                return denied
            if self.faults.quota_on_session > 0:
                self.faults.quota_on_session -= 1
                return self._quota_error()
            title = str(resource.get("snippet", {}).get("title", ""))
            if not title.strip() or len(title) > 100 or "<" in title or ">" in title:
                return google_error(
                    400,
                    "The request metadata specifies an invalid or empty video title.",
                    "invalidTitle",
                    "youtube.video",
                )
            upload_id = secrets.token_urlsafe(18)
            path = self.storage_dir / f"{upload_id}.bin"
            path.write_bytes(b"")
            self.sessions[upload_id] = FakeUploadSession(
                upload_id, resource, total, request.headers.get("x-upload-content-type", "video/*"), path
            )
        location = f"{str(request.base_url).rstrip('/')}{UPLOAD_PATH}?uploadType=resumable&upload_id={upload_id}"
        return Response(status_code=200, headers={"Location": location})

    async def _session_put(self, request: Request) -> Response:
        response = await self._handle_session_put(request)
        with self._lock:
            self.session_requests.append(
                (
                    request.query_params.get("upload_id", ""),
                    request.headers.get("content-range", ""),
                    response.status_code,
                )
            )
        return response

    async def _handle_session_put(self, request: Request) -> Response:
        body = await request.body()
        content_range = request.headers.get("content-range", "")
        with self._lock:
            if denied := self._unauthorized(request):
                return denied
            session = self.sessions.get(request.query_params.get("upload_id", ""))
            if session is None or session.expired:
                return google_error(404, "Upload session not found or expired", "notFound")
            if session.video_id is not None:
                return JSONResponse(self.videos[session.video_id], status_code=200)
            if status_query := _STATUS_RANGE.fullmatch(content_range):
                if int(status_query.group(1)) != session.total:
                    return google_error(400, "Content-Range total does not match the session", "badContent")
                return self._incomplete(session)
            chunk = _CHUNK_RANGE.fullmatch(content_range)
            if chunk is None:
                return google_error(400, "Content-Range header required", "badContent")
            start, end, total = map(int, chunk.groups())
            session.bytes_received += len(body)
            if self.faults.quota_on_chunk > 0:
                self.faults.quota_on_chunk -= 1
                return self._quota_error()
            if self.faults.chunk_errors > 0:
                self.faults.chunk_errors -= 1
                return google_error(self.faults.chunk_error_status, "Backend Error", "backendError")
            problem = self._chunk_problem(session, start, end, total, len(body))
            if problem:
                return google_error(400, problem, "badContent")
            self._write(session, start, body)
            if session.committed < session.total:
                return self._incomplete(session)
            return JSONResponse(self._finish(session), status_code=200)

    @staticmethod
    def _chunk_problem(session: FakeUploadSession, start: int, end: int, total: int, length: int) -> str | None:
        if total != session.total:
            return "Content-Range total does not match the session"
        if end - start + 1 != length or end >= total:
            return "Content-Range does not match the request body"
        if start > session.committed:
            return f"chunk starts at {start} but only {session.committed} bytes were received"
        if end != total - 1 and length % GRANULARITY:
            return "chunk size must be a multiple of 256 KiB except for the final chunk"
        return None

    def _write(self, session: FakeUploadSession, start: int, data: bytes) -> None:
        with session.path.open("r+b") as handle:
            handle.seek(start)
            handle.write(data)
        session.committed = max(session.committed, start + len(data))

    @staticmethod
    def _incomplete(session: FakeUploadSession) -> Response:
        headers = {"Range": f"bytes=0-{session.committed - 1}"} if session.committed else {}
        return Response(status_code=308, headers=headers)

    def _finish(self, session: FakeUploadSession) -> dict[str, Any]:
        video_id = secrets.token_urlsafe(8)[:11]
        resource = {
            "kind": "youtube#video",
            "id": video_id,
            "snippet": session.resource.get("snippet", {}),
            "status": {"uploadStatus": "uploaded", **session.resource.get("status", {})},
        }
        session.video_id = video_id
        self.videos[video_id] = resource
        return resource

    def _quota_error(self) -> JSONResponse:
        reason = self.faults.quota_reason
        message = "The request cannot be completed because you have exceeded your quota."
        return google_error(403, message, reason, "youtube.quota")
