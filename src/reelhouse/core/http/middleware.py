"""ASGI middleware every request passes: the request body limit, metrics and the access log.

The body limit counts bytes as the application reads them, so a 50 MB body costs at most the
limit in memory before it is answered with 413, whatever Content-Length says (or omits). A route
that takes uploads raises the limit for its own request with the `allow_body` dependency before
it reads the body; uploads stream to storage and keep their own cap (MAX_UPLOAD_BYTES).
Written as plain ASGI rather than `@app.middleware("http")`, which would buffer streaming
responses and hide the receive channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException, Request

from reelhouse.core.http.errors import error_body
from reelhouse.core.telemetry import metrics

log = logging.getLogger("reelhouse.http.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_LIMIT_KEY = "reelhouse.body_limit"


def allow_body(max_bytes: int, *, content_type: str = "multipart/form-data") -> Callable[[Request], None]:
    """Dependency for upload routes: a request of `content_type` may carry up to `max_bytes`
    (others keep the global limit, so a JSON body cannot ride on the upload allowance)."""

    def raise_limit(request: Request) -> None:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == content_type:
            raise_body_limit(request, max_bytes)

    return raise_limit


def raise_body_limit(request: Request, max_bytes: int) -> None:
    """Lets this request's body reach `max_bytes`: for a route that streams a raw upload and has
    checked its content type itself, before it reads the body."""
    request.scope[BODY_LIMIT_KEY] = max_bytes


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (MAX_REQUEST_BODY_BYTES)")


class RequestGuard:
    """Body limit, request metrics and (optionally) the access log, in one pass."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        received = {"bytes": 0}

        def limit() -> int:
            return int(scope.get(BODY_LIMIT_KEY, self.max_body_bytes))

        declared = _content_length(scope)

        async def guarded_receive() -> Message:
            if declared is not None and declared > limit():
                raise BodyTooLarge(limit())
            message = await receive()
            if message["type"] == "http.request":
                received["bytes"] += len(message.get("body", b""))
                if received["bytes"] > limit():
                    raise BodyTooLarge(limit())
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyTooLarge as exc:
            # Raised where nothing turned it into a response (a route reading the stream itself).
            if status["sent"]:
                raise
            await _send_error(tracking_send, exc.status_code, str(exc.detail))
        finally:
            self._record(scope, status["code"], time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", "unmatched")
        method = scope.get("method", "")
        metrics.HTTP_REQUESTS.labels(template, method, str(status)).inc()
        metrics.HTTP_SECONDS.labels(template).observe(seconds)
        if self.access_log:
            log.info(
                "%s %s %s %.1fms",
                method,
                template,
                status,
                seconds * 1000,
                extra={
                    "component": "access",
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps(error_body(status, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
