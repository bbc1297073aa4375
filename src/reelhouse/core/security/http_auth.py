"""FastAPI dependencies that turn request credentials into a `Principal` and enforce roles.

Accepted credentials: `Authorization: Bearer <api token>`; `Authorization: Bearer <ADMIN_TOKEN>`
or `X-Admin-Token: <ADMIN_TOKEN>` (vod-tender's runbooks); HTTP Basic with a reelhouse user
(rate-limited like logins, since each attempt checks a password).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from reelhouse.core.security.users import Principal, authenticate_password, authenticate_token


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_login_rate(request: Request, username: str) -> None:
    limiter = request.app.state.login_limiter
    if limiter is None:
        return
    allowed, wait = limiter.hit(f"{client_ip(request)}|{username}")
    if not allowed:
        raise HTTPException(429, f"too many login attempts; retry in {int(wait) + 1}s",
                            headers={"Retry-After": str(int(wait) + 1)})


async def resolve_principal(request: Request) -> Principal | None:
    cached = getattr(request.state, "principal", "unset")
    if cached != "unset":
        return cached
    principal = await _authenticate(request)
    request.state.principal = principal
    return principal


async def _authenticate(request: Request) -> Principal | None:
    state = request.app.state
    admin_token = state.settings.security.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    presented_admin = request.headers.get("x-admin-token") or (value if scheme.lower() == "bearer" else "")
    if admin_token and presented_admin and hmac.compare_digest(presented_admin, admin_token):
        return Principal(name="admin-token", role="admin")
    if scheme.lower() == "bearer" and value:
        principal = await authenticate_token(state.runtime.engine, value)
        if principal is None:
            raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
        return principal
    if scheme.lower() == "basic" and value:
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(401, "malformed basic credentials") from None
        check_login_rate(request, username)
        principal = await authenticate_password(state.runtime.engine, username, password)
        if principal is None:
            raise HTTPException(401, "invalid username or password", headers={"WWW-Authenticate": "Basic"})
        return principal
    if presented_admin and request.headers.get("x-admin-token"):
        raise HTTPException(401, "invalid admin token")
    return None


def require_role(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency: 401 without credentials, 403 with too small a role."""

    async def dependency(request: Request) -> Principal:
        principal = await resolve_principal(request)
        if principal is None:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        if not principal.has_role(role):
            raise HTTPException(403, f"requires role {role}")
        return principal

    dependency.required_role = role  # read by the route-table audit test
    return dependency


require_viewer = require_role("viewer")
require_operator = require_role("operator")
require_admin = require_role("admin")
