"""Browser sessions: an API token in an HttpOnly cookie, turned into a Bearer credential.

A signed-in browser holds `rh_session` (an ordinary API token with an expiry, HttpOnly,
SameSite=Strict) and `rh_csrf` (random, readable by the page's scripts). `SessionCookieAuth`
hands the session to the API as `Authorization: Bearer <token>` when the request carries no
credentials of its own, so pages call the same JSON API (same checks, same error messages) as
any client. Unsafe methods get the credential only with an `X-CSRF-Token` header equal to the
`rh_csrf` cookie: another site can neither read that cookie nor set that header.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import SimpleCookie
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from reelhouse.core.db.models import api_tokens
from reelhouse.core.security.users import hash_token

SESSION_COOKIE = "rh_session"
CSRF_COOKIE = "rh_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The API token row's name marks it as a browser session in the token list.
SESSION_TOKEN_NAME = "web session"


def parse_cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header means no usable cookies, not an error page
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(cookie: str | None, presented: str | None) -> bool:
    return bool(cookie) and bool(presented) and hmac.compare_digest(str(cookie), str(presented))


class SessionCookieAuth:
    """ASGI middleware (not BaseHTTPMiddleware, so streamed and SSE responses pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self._with_session_credential(scope)
        await self.app(scope, receive, send)

    @staticmethod
    def _with_session_credential(scope: Scope) -> Scope:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        names = {name for name, _ in headers}
        if b"authorization" in names or b"x-admin-token" in names or b"cookie" not in names:
            return scope
        cookies = parse_cookies("; ".join(v.decode("latin-1") for n, v in headers if n == b"cookie"))
        token = cookies.get(SESSION_COOKIE)
        if not token:
            return scope
        if scope["method"] not in SAFE_METHODS:
            presented = next((v.decode("latin-1") for n, v in headers if n == CSRF_HEADER.encode()), None)
            if not csrf_matches(cookies.get(CSRF_COOKIE), presented):
                return scope
        return {**scope, "headers": [*headers, (b"authorization", f"Bearer {token}".encode("latin-1"))]}


def cookie_options(secure: bool, *, http_only: bool, max_age: int | None = None) -> dict[str, Any]:
    return {"httponly": http_only, "secure": secure, "samesite": "strict", "path": "/", "max_age": max_age}


async def revoke_session_token(engine: AsyncEngine, token: str) -> bool:
    """Logout: the cookie's token stops working at once, even if a copy of the cookie survives."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_tokens).where(api_tokens.c.token_hash == hash_token(token)).values(revoked=True)
        )
    return result.rowcount > 0
