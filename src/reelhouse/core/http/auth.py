"""Login sessions, API tokens and user management over HTTP.

Sessions: `POST /auth/login` returns a token that expires `SESSION_TTL` after its last use
(and `SESSION_MAX_AGE` after login); `POST /auth/logout` revokes it. (Browser pages sign in
through the web UI's form, which keeps the token in an HttpOnly cookie.)
API tokens: `POST/GET /v1/tokens`, `DELETE /v1/tokens/{id}` for the caller's own; admins see
and revoke anyone's. Users (admin): `/v1/users[...]`, plus `POST /api/admin/users/lock` as the
LegacyVideo runbook calls it. Every change is audited with ids only.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from reelhouse.core.db.types import utcnow
from reelhouse.core.http.bounds import Limit, Offset
from reelhouse.core.http.deps import Admin, Auth, DbId, DbIdQuery, Engine, JsonObject, Viewer
from reelhouse.core.http.errors import errors
from reelhouse.core.security import users as user_store
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import client_ip
from reelhouse.core.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from reelhouse.core.security.users import Principal, UserError

router = APIRouter(tags=["auth"])
MAX_TOKEN_TTL_SECONDS = 10 * 365 * 86400

Password = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
Username = Field(min_length=1, max_length=120, pattern=user_store.USERNAME.pattern)


class LoginResult(BaseModel):
    token: str = Field(description="Bearer token (a session): send as `Authorization: Bearer <token>`")
    token_type: str = "bearer"
    role: str
    expires_at: datetime = Field(description="when the session ends if unused (it slides with each use)")


class LogoutResult(BaseModel):
    revoked: bool = Field(description="whether a session or token was revoked (false for Basic/ADMIN_TOKEN)")


class Me(BaseModel):
    name: str
    role: str
    user_id: int | None


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("api", min_length=1, max_length=120)
    expires_in: int | None = Field(None, ge=60, le=MAX_TOKEN_TTL_SECONDS, description="lifetime in seconds")


class NewToken(BaseModel):
    id: int
    token: str = Field(description="shown once; only its hash is stored")
    name: str
    prefix: str
    expires_at: datetime | None


class TokenView(BaseModel):
    id: int
    user_id: int
    username: str
    name: str
    kind: str = Field(description="login (a session) or api")
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked: bool


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Username
    password: str = Password
    role: str = Field("viewer", pattern="^(viewer|operator|admin)$")


class CreatedUser(BaseModel):
    id: int
    username: str
    role: str


class UserView(BaseModel):
    id: int
    username: str
    role: str
    locked: bool
    created_at: datetime
    active_tokens: int


class LockOutcome(BaseModel):
    id: int
    locked: bool
    tokens_revoked: int


class RunbookLock(BaseModel):
    """LegacyVideo's body: `{"userId": "...", "locked": true}` (an id, or a username)."""

    userId: int | str = Field(description="user id, or username")
    locked: bool = True


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Password


class OwnPasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Password


class PasswordChanged(BaseModel):
    id: int
    sessions_ended: int


def _user_error(exc: UserError) -> HTTPException:
    return HTTPException(409 if "exists" in str(exc) else 400, str(exc))


# ---- sessions ------------------------------------------------------------------------------------


@router.post("/auth/login", response_model=LoginResult, responses=errors(400, 401, 403, 429), summary="Log in")
async def login(request: Request, engine: Engine, auth: Auth) -> LoginResult:
    """Exchange username and password for a session token. Attempts are limited per address
    and per account (RATE_LIMIT_*)."""
    raw = await request.body()
    # Read by hand so a request without credentials is a 401 like every unauthenticated change;
    # a body that is not JSON at all is a 400.
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "request body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not body.get("password"):
        raise HTTPException(401, "username and password required")
    if not auth.origin_allowed(request):
        raise HTTPException(403, "cross-site login refused (CSRF)")
    username, password = body["username"][:200], str(body["password"])
    auth.check_login_allowed(client_ip(request), username, record=True)
    principal = await auth.check_password(username, password)
    if principal is None or principal.user_id is None:
        known = await user_store.find_user(engine, username) if user_store.USERNAME.match(username) else None
        target = f"user:{known['id']}" if known else None
        reason = "locked" if known and known["locked"] else ("bad_password" if known else "unknown_user")
        await audit(engine, "anonymous", "auth.login.failed", target, {"reason": reason})
        raise HTTPException(401, "invalid username or password")
    session = await user_store.create_session(engine, principal.user_id, auth.session_policy)
    await audit(engine, f"user:{principal.user_id}", "auth.login", f"user:{principal.user_id}")
    assert session.expires_at is not None
    return LoginResult(token=session.token, role=principal.role, expires_at=session.expires_at)


@router.post("/auth/logout", response_model=LogoutResult, summary="Revoke the session or token this request uses")
async def logout(engine: Engine, principal: Viewer) -> LogoutResult:
    revoked = False
    if principal.token_id is not None:
        revoked = await user_store.revoke_api_token(engine, principal.token_id)
        await audit(engine, f"user:{principal.user_id}", "auth.logout", f"token:{principal.token_id}")
    return LogoutResult(revoked=revoked)


@router.get("/v1/me", response_model=Me, summary="Who the credentials belong to")
async def me(principal: Viewer) -> Me:
    return Me(name=principal.name, role=principal.role, user_id=principal.user_id)


@router.post("/v1/me/password", response_model=PasswordChanged, responses=errors(400, 429))
async def change_own_password(
    body: OwnPasswordChange, engine: Engine, auth: Auth, principal: Viewer
) -> PasswordChanged:
    """Change the caller's password (current one required); ends the caller's other sessions."""
    if principal.user_id is None:
        raise HTTPException(400, "the ADMIN_TOKEN identity has no password")
    if await auth.check_password(principal.name, body.current_password) is None:
        raise HTTPException(400, "current password is wrong")
    try:
        ended = await user_store.set_password(engine, principal.user_id, body.new_password, passwords=auth.passwords)
    except UserError as exc:
        raise _user_error(exc) from None
    await audit(engine, f"user:{principal.user_id}", "user.password", f"user:{principal.user_id}")
    return PasswordChanged(id=principal.user_id, sessions_ended=ended or 0)


# ---- API tokens ----------------------------------------------------------------------------------


@router.post("/v1/tokens", status_code=201, response_model=NewToken, responses=errors(400))
async def create_token(body: TokenRequest, engine: Engine, auth: Auth, principal: Viewer) -> NewToken:
    """Create an API token for the calling user, with a name and an optional lifetime."""
    if principal.user_id is None:
        raise HTTPException(400, "the ADMIN_TOKEN identity has no user; create a user first")
    ttl = timedelta(seconds=body.expires_in) if body.expires_in else None
    cap = auth.settings.api_token_max_ttl
    if cap is not None and (ttl is None or ttl > cap):
        raise HTTPException(400, f"expires_in must be at most {int(cap.total_seconds())} seconds (API_TOKEN_MAX_TTL)")
    issued = await user_store.issue_token(
        engine, principal.user_id, body.name, expires_at=utcnow() + ttl if ttl else None
    )
    await audit(engine, f"user:{principal.user_id}", "token.create", f"token:{issued.id}")
    return NewToken(
        id=issued.id, token=issued.token, name=issued.name, prefix=issued.prefix, expires_at=issued.expires_at
    )


@router.get("/v1/tokens", response_model=list[TokenView], summary="Active tokens: the caller's (admin: anyone's)")
async def list_tokens(
    engine: Engine,
    principal: Viewer,
    limit: Limit = 100,
    offset: Offset = 0,
    include_inactive: bool = False,
    user_id: DbIdQuery = None,
) -> list[dict[str, Any]]:
    if not principal.has_role("admin"):
        if principal.user_id is None:
            return []
        user_id = principal.user_id
    return await user_store.list_tokens(
        engine, user_id=user_id, include_inactive=include_inactive, limit=limit, offset=offset
    )


@router.delete("/v1/tokens/{token_id}", status_code=204, responses=errors(404), summary="Revoke a token")
async def revoke_token(token_id: DbId, engine: Engine, principal: Viewer) -> Response:
    """Revoke one of the caller's tokens (admin: anyone's). It stops working at once."""
    owner = None if principal.has_role("admin") else (principal.user_id or -1)
    if not await user_store.revoke_api_token(engine, token_id, owner):
        raise HTTPException(404, f"token {token_id} not found")
    await audit(
        engine,
        principal.name if principal.user_id is None else f"user:{principal.user_id}",
        "token.revoke",
        f"token:{token_id}",
    )
    return Response(status_code=204)


# ---- users (admin) -------------------------------------------------------------------------------


def _actor(principal: Principal) -> str:
    return principal.name if principal.user_id is None else f"user:{principal.user_id}"


@router.post("/v1/users", status_code=201, response_model=CreatedUser, responses=errors(400, 409))
async def create_user(body: NewUser, engine: Engine, auth: Auth, principal: Admin) -> CreatedUser:
    """Create a user (admin)."""
    try:
        user_id = await user_store.create_user(
            engine, body.username, body.password, body.role, passwords=auth.passwords
        )
    except UserError as exc:
        raise _user_error(exc) from None
    await audit(engine, _actor(principal), "user.create", f"user:{user_id}", {"role": body.role})
    return CreatedUser(id=user_id, username=body.username, role=body.role)


@router.get("/v1/users", response_model=list[UserView], summary="Users (admin)")
async def list_users(engine: Engine, _principal: Admin, limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    return await user_store.list_users(engine, limit=limit, offset=offset)


@router.get("/v1/users/{user_id}", response_model=UserView, responses=errors(404), summary="One user (admin)")
async def get_user(user_id: DbId, engine: Engine, _principal: Admin) -> dict[str, Any]:
    found = await user_store.find_user(engine, user_id)
    if found is None:
        raise HTTPException(404, f"user {user_id} not found")
    return found


@router.delete("/v1/users/{user_id}", status_code=204, responses=errors(404), summary="Delete a user (admin)")
async def delete_user(user_id: DbId, engine: Engine, principal: Admin) -> Response:
    if not await user_store.delete_user(engine, user_id):
        raise HTTPException(404, f"user {user_id} not found")
    await audit(engine, _actor(principal), "user.delete", f"user:{user_id}")
    return Response(status_code=204)


async def _lock(engine: Any, principal: Principal, user_id: int, locked: bool) -> LockOutcome:
    revoked = await user_store.set_locked(engine, user_id, locked)
    if revoked is None:
        raise HTTPException(404, f"user {user_id} not found")
    await audit(
        engine,
        _actor(principal),
        "user.lock" if locked else "user.unlock",
        f"user:{user_id}",
        {"tokens_revoked": revoked},
    )
    return LockOutcome(id=user_id, locked=locked, tokens_revoked=revoked)


@router.post("/v1/users/{user_id}/lock", response_model=LockOutcome, responses=errors(404))
async def lock_user(user_id: DbId, engine: Engine, principal: Admin) -> LockOutcome:
    """Lock a user (admin): their passwords stop working and every token is revoked at once."""
    return await _lock(engine, principal, user_id, True)


@router.post("/v1/users/{user_id}/unlock", response_model=LockOutcome, responses=errors(404))
async def unlock_user(user_id: DbId, engine: Engine, principal: Admin) -> LockOutcome:
    """Unlock a user (admin). Revoked tokens stay revoked; the user logs in again."""
    return await _lock(engine, principal, user_id, False)


@router.post("/api/admin/users/lock", response_model=LockOutcome, responses=errors(400, 404))
async def runbook_lock(body: JsonObject, engine: Engine, principal: Admin) -> LockOutcome:
    """LegacyVideo's runbook call: `{"userId": "<id or username>", "locked": true}`."""
    try:
        request = RunbookLock.model_validate(body)
    except ValueError:
        raise HTTPException(400, 'expected {"userId": <id or username>, "locked": true|false}') from None
    ref = request.userId if isinstance(request.userId, int) else request.userId[:120]
    found = await user_store.find_user(engine, ref)
    if found is None:
        raise HTTPException(404, "user not found")
    return await _lock(engine, principal, found["id"], request.locked)


@router.put("/v1/users/{user_id}/password", response_model=PasswordChanged, responses=errors(400, 404))
async def set_user_password(
    user_id: DbId, body: PasswordChange, engine: Engine, auth: Auth, principal: Admin
) -> PasswordChanged:
    """Set a user's password (admin); the user's login sessions end."""
    try:
        ended = await user_store.set_password(engine, user_id, body.password, passwords=auth.passwords)
    except UserError as exc:
        raise _user_error(exc) from None
    if ended is None:
        raise HTTPException(404, f"user {user_id} not found")
    await audit(engine, _actor(principal), "user.password", f"user:{user_id}")
    return PasswordChanged(id=user_id, sessions_ended=ended)
