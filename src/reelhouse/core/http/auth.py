"""Login, API tokens and user management."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from reelhouse.core.security import users as user_store
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import check_login_rate, require_admin, require_viewer
from reelhouse.core.security.users import Principal

router = APIRouter(tags=["auth"])


class TokenRequest(BaseModel):
    name: str = Field("api", min_length=1, max_length=120)


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=120)
    password: str = Field(min_length=8, max_length=1024)
    role: str = "viewer"


@router.post("/auth/login", summary="Exchange username and password for an API token")
async def login(request: Request) -> dict[str, Any]:
    # The body is read by hand so that a request without credentials is a 401, like every
    # other unauthenticated mutation, rather than a validation error.
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not body.get("username") or not body.get("password"):
        raise HTTPException(401, "username and password required")
    username, password = str(body["username"]), str(body["password"])
    check_login_rate(request, username)
    engine = request.app.state.runtime.engine
    principal = await user_store.authenticate_password(engine, username, password)
    if principal is None or principal.user_id is None:
        raise HTTPException(401, "invalid username or password")
    token = await user_store.create_api_token(engine, principal.user_id, "login")
    await audit(engine, principal.name, "auth.login", f"user:{principal.user_id}")
    return {"token": token, "token_type": "bearer", "role": principal.role}


@router.get("/v1/me")
async def me(principal: Principal = Depends(require_viewer)) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role, "user_id": principal.user_id}


@router.post("/v1/tokens", status_code=201, summary="Create an API token for the calling user")
async def create_token(request: Request, body: TokenRequest,
                       principal: Principal = Depends(require_viewer)) -> dict[str, Any]:
    if principal.user_id is None:
        raise HTTPException(400, "the ADMIN_TOKEN identity has no user; create a user first")
    engine = request.app.state.runtime.engine
    token = await user_store.create_api_token(engine, principal.user_id, body.name)
    await audit(engine, principal.name, "token.create", f"user:{principal.user_id}")
    return {"token": token, "name": body.name}


@router.post("/v1/users", status_code=201, summary="Create a user (admin)")
async def create_user(request: Request, body: NewUser, principal: Principal = Depends(require_admin)) -> dict:
    engine = request.app.state.runtime.engine
    try:
        user_id = await user_store.create_user(engine, body.username, body.password, body.role)
    except user_store.UserError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 400, str(exc)) from None
    await audit(engine, principal.name, "user.create", f"user:{user_id}", {"role": body.role})
    return {"id": user_id, "username": body.username, "role": body.role}
