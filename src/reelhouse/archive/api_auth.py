"""OAuth connect flows for Twitch and YouTube, and token refresh.

vod-tender let any visitor start a flow and kept `state` in one process's memory (§12.24):
anyone could bind their own account, and a second replica rejected every callback. Here:
- only an admin may start a connect;
- `state` is random, single-use, expires after `STATE_TTL`, and lives in the database (kv
  `oauth_state:<provider>:<sha256(state)>`), so any API node can finish the flow;
- it is bound to the browser that started: `start` sets an HttpOnly cookie whose hash is stored
  with the state, and the callback must present it. A leaked callback URL is useless elsewhere.
The callback itself cannot require an Authorization header (it is the provider's redirect of the
admin's browser); the cookie binding is what ties it to the admin who started.
Tokens go through the encrypted `TokenStore`; responses say whether tokens exist, never what they are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import NoDecode
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.api import rfc3339
from reelhouse.archive.settings import ArchiveSettings, archive_settings
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.twitch.oauth import DEFAULT_SCOPES as TWITCH_DEFAULT_SCOPES
from reelhouse.archive.twitch.oauth import TwitchOAuth
from reelhouse.archive.youtube import YouTubeClient
from reelhouse.archive.youtube import DEFAULT_SCOPES as YOUTUBE_DEFAULT_SCOPES
from reelhouse.config import ConfigError, Settings, _comma_list, _env, _Section, describe_validation_error
from reelhouse.core.db.models import kv
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError, TaskError
from reelhouse.core.jobs.kv import set_value
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.crypto import CryptoError
from reelhouse.core.security.http_auth import require_admin, resolve_principal
from reelhouse.core.security.users import Principal

log = logging.getLogger("reelhouse.archive.oauth")
router = APIRouter(tags=["oauth"])
STATE_TTL = timedelta(minutes=10)
STATE_PREFIX = "oauth_state:"
# NoDecode: pydantic-settings would otherwise parse a list variable as JSON and reject `a,b`.
ScopeList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


class OAuthFlowSettings(_Section):
    """The connect flows' own variables (vod-tender's names)."""

    twitch_redirect_uri: str = Field("", validation_alias=_env("TWITCH_REDIRECT_URI"))
    # vod-tender accepts commas or spaces between scopes.
    twitch_scopes: ScopeList = Field(default_factory=lambda: list(TWITCH_DEFAULT_SCOPES),
                                     validation_alias=_env("TWITCH_SCOPES"))
    yt_scopes: ScopeList = Field(default_factory=lambda: list(YOUTUBE_DEFAULT_SCOPES),
                                 validation_alias=_env("YT_SCOPES"))

    def scopes(self, provider: str) -> list[str]:
        raw = self.twitch_scopes if provider == "twitch" else self.yt_scopes
        return [scope for item in raw for scope in item.split()]


def oauth_flow_settings(settings: Settings) -> OAuthFlowSettings:
    """The section, read from the environment once and kept on the settings tree (`register`
    reads it at start-up, so a bad value stops start-up rather than failing a request)."""
    section = getattr(settings, "archive_oauth", None)
    if section is None:
        try:
            section = OAuthFlowSettings()
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None
        settings.archive_oauth = section  # type: ignore[attr-defined]
    return section


def _flow_settings(request: Request) -> OAuthFlowSettings:
    return oauth_flow_settings(request.app.state.runtime.settings)


def _redirect_uri(request: Request, provider: str) -> str:
    archive = archive_settings(request.app.state.runtime.settings)
    configured = (_flow_settings(request).twitch_redirect_uri if provider == "twitch"
                  else archive.yt_redirect_uri)
    if configured:
        return configured
    base = request.app.state.runtime.settings.server.public_base_url.rstrip("/")
    if base:
        return f"{base}/auth/{provider}/callback"
    env = "TWITCH_REDIRECT_URI" if provider == "twitch" else "YT_REDIRECT_URI"
    raise HTTPException(400, f"{env} (or PUBLIC_BASE_URL) is not set")


def _twitch_client(request: Request, archive: ArchiveSettings) -> TwitchOAuth:
    if not archive.twitch_client_id or not archive.twitch_client_secret:
        raise HTTPException(400, "TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET must be set")
    return TwitchOAuth(archive.twitch_client_id, archive.twitch_client_secret,
                       redirect_uri=_redirect_uri(request, "twitch"),
                       scopes=_flow_settings(request).scopes("twitch"), auth_base=archive.twitch_auth_base)


def _youtube_client(request: Request, archive: ArchiveSettings, store: TokenStore) -> YouTubeClient:
    if not archive.yt_client_id or not archive.yt_client_secret:
        raise HTTPException(400, "YT_CLIENT_ID and YT_CLIENT_SECRET must be set")
    load, save = store.youtube_callbacks("")
    flow = _flow_settings(request)
    return YouTubeClient(archive.yt_client_id, archive.yt_client_secret, load_tokens=load, save_tokens=save,
                         redirect_uri=_redirect_uri(request, "youtube"), scopes=flow.scopes("youtube"),
                         api_base=archive.youtube_api_base, oauth_base=archive.youtube_oauth_base,
                         max_attempts=2)


def _store(request: Request) -> TokenStore:
    runtime = request.app.state.runtime
    return TokenStore.from_settings(runtime.engine, runtime.settings)


async def _load_stored(store: TokenStore, provider: str):
    try:
        return await store.load(provider)
    except CryptoError as exc:
        # e.g. the master key changed without MASTER_ENCRYPTION_KEY_PREVIOUS: say so, never 500.
        raise HTTPException(409, f"stored {provider} token cannot be decrypted: {exc}") from None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cookie_name(provider: str) -> str:
    return f"rh_oauth_{provider}"


# ---- state: stored, bound to a cookie, single use ----------------------------------------------

async def _save_state(engine: AsyncEngine, provider: str, state: str, binding: str, actor: str) -> None:
    now = utcnow()
    record = {"binding": _digest(binding), "actor": actor, "expires_at": (now + STATE_TTL).isoformat()}
    async with engine.begin() as conn:
        # Abandoned flows leave rows behind; each new start sweeps the expired ones.
        await conn.execute(delete(kv).where(kv.c.channel == "", kv.c.key.like(f"{STATE_PREFIX}%"),
                                            kv.c.updated_at < now - STATE_TTL))
        await set_value(conn, f"{STATE_PREFIX}{provider}:{_digest(state)}", json.dumps(record))


async def _consume_state(request: Request, provider: str) -> dict[str, Any]:
    """Take the callback's state out of the store (whatever happens next, it is spent) and
    check its expiry and browser binding."""
    state = request.query_params.get("state")
    if not state:
        raise HTTPException(400, "missing state parameter")
    key = f"{STATE_PREFIX}{provider}:{_digest(state)}"
    async with request.app.state.runtime.engine.begin() as conn:
        value = (await conn.execute(delete(kv).where(kv.c.channel == "", kv.c.key == key)
                                    .returning(kv.c.value))).scalar()
    if value is None:
        raise HTTPException(400, "invalid or already used state; start the connection again")
    record = json.loads(value)
    if datetime.fromisoformat(record["expires_at"]) <= utcnow():
        raise HTTPException(400, "state expired; start the connection again")
    cookie = request.cookies.get(_cookie_name(provider), "")
    if not cookie or not hmac.compare_digest(_digest(cookie), record["binding"]):
        raise HTTPException(400, "state was not issued to this browser session; start the connection again")
    error = request.query_params.get("error")
    if error:
        detail = request.query_params.get("error_description") or error
        raise HTTPException(400, f"authorization was not granted: {detail[:200]}")
    if not request.query_params.get("code"):
        raise HTTPException(400, "missing code parameter")
    return record


async def _start(request: Request, provider: str, principal: Principal) -> Response:
    runtime = request.app.state.runtime
    archive = archive_settings(runtime.settings)
    state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    if provider == "twitch":
        client: Any = _twitch_client(request, archive)
    else:
        client = _youtube_client(request, archive, _store(request))
    try:
        url = client.authorize_url(state)
    finally:
        await client.aclose()
    await _save_state(runtime.engine, provider, state, binding, principal.name)
    await audit(runtime.engine, principal.name, f"oauth.{provider}.start", f"oauth:{provider}")
    if "application/json" in request.headers.get("accept", ""):
        response: Response = JSONResponse({"authorize_url": url, "expires_in": int(STATE_TTL.total_seconds())})
    else:
        response = RedirectResponse(url, status_code=302)
    # SameSite=Lax: the callback is a top-level navigation from the provider's site, which
    # Strict would strip the cookie from.
    response.set_cookie(_cookie_name(provider), binding, max_age=int(STATE_TTL.total_seconds()),
                        path=f"/auth/{provider}", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response


async def admin_in_browser(request: Request) -> Principal:
    """`require_admin`, except that the 401 asks for Basic credentials: `start` is opened in the
    admin's browser (the cookie must land there), and a browser prompts for Basic, not Bearer."""
    principal = await resolve_principal(request)
    if principal is None:
        raise HTTPException(401, "authentication required",
                            headers={"WWW-Authenticate": 'Basic realm="reelhouse", charset="UTF-8"'})
    if not principal.has_role("admin"):
        raise HTTPException(403, "requires role admin")
    return principal


admin_in_browser.required_role = "admin"  # type: ignore[attr-defined]  # read by the route audit test


def _upstream_error(provider: str, what: str, exc: TaskError) -> HTTPException:
    if isinstance(exc, PermanentError):
        return HTTPException(400, f"{provider} rejected the {what}: {exc}")
    log.warning("%s %s failed: %s", provider, what, exc, extra={"component": "oauth"})
    return HTTPException(502, f"{provider} token endpoint unavailable; try again")


def _finish(response: JSONResponse, provider: str) -> JSONResponse:
    response.delete_cookie(_cookie_name(provider), path=f"/auth/{provider}")
    return response


# ---- Twitch ------------------------------------------------------------------------------------

@router.get("/auth/twitch/start", summary="Connect a Twitch account (admin): redirects to Twitch")
async def twitch_start(request: Request, principal: Principal = Depends(admin_in_browser)) -> Response:
    return await _start(request, "twitch", principal)


@router.get("/auth/twitch/callback", summary="Twitch redirects here with code and state")
async def twitch_callback(request: Request) -> JSONResponse:
    record = await _consume_state(request, "twitch")
    runtime = request.app.state.runtime
    async with _twitch_client(request, archive_settings(runtime.settings)) as client:
        try:
            tokens = await client.exchange_code(request.query_params["code"])
        except TaskError as exc:
            raise _upstream_error("twitch", "authorization code", exc) from None
    await _store(request).save("twitch", access_token=tokens.access_token, refresh_token=tokens.refresh_token,
                               expires_at=tokens.expires_at, scope=" ".join(tokens.scopes))
    await audit(runtime.engine, record["actor"], "oauth.twitch.connected", "oauth:twitch")
    expires_in = max(0, int((tokens.expires_at - utcnow()).total_seconds()))
    return _finish(JSONResponse({"status": "ok", "scopes": list(tokens.scopes), "expires_in": expires_in}), "twitch")


@router.post("/auth/twitch/refresh", summary="Refresh the stored Twitch user token now (admin)")
async def twitch_refresh(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    runtime = request.app.state.runtime
    store = _store(request)
    stored = await _load_stored(store, "twitch")
    if stored is None or not stored.refresh_token:
        raise HTTPException(409, "no Twitch user token with a refresh token is stored; "
                                 "connect one with GET /auth/twitch/start")
    async with _twitch_client(request, archive_settings(runtime.settings)) as client:
        try:
            tokens = await client.refresh(stored.refresh_token)
        except TaskError as exc:
            raise _upstream_error("twitch", "refresh token", exc) from None
    await store.save("twitch", access_token=tokens.access_token, refresh_token=tokens.refresh_token,
                     expires_at=tokens.expires_at, scope=" ".join(tokens.scopes) or stored.scope)
    await audit(runtime.engine, principal.name, "oauth.twitch.refresh", "oauth:twitch")
    return {"status": "ok", "expires_at": rfc3339(tokens.expires_at),
            "expires_in": max(0, int((tokens.expires_at - utcnow()).total_seconds())),
            "scopes": list(tokens.scopes) or stored.scope.split()}


# ---- YouTube -----------------------------------------------------------------------------------

@router.get("/auth/youtube/start", summary="Connect a YouTube channel (admin): redirects to Google")
async def youtube_start(request: Request, principal: Principal = Depends(admin_in_browser)) -> Response:
    return await _start(request, "youtube", principal)


@router.get("/auth/youtube/callback", summary="Google redirects here with code and state")
async def youtube_callback(request: Request) -> JSONResponse:
    record = await _consume_state(request, "youtube")
    runtime = request.app.state.runtime
    async with _youtube_client(request, archive_settings(runtime.settings), _store(request)) as client:
        try:
            tokens = await client.exchange_code(request.query_params["code"])  # saved via the store
        except TaskError as exc:
            raise _upstream_error("youtube", "authorization code", exc) from None
    await audit(runtime.engine, record["actor"], "oauth.youtube.connected", "oauth:youtube")
    return _finish(JSONResponse({"status": "ok", "expiry": rfc3339(tokens.expires_at),
                                 "access_token_present": bool(tokens.access_token),
                                 "refresh_token_present": bool(tokens.refresh_token)}), "youtube")


@router.post("/auth/youtube/refresh", summary="Refresh the stored YouTube token now (admin)")
async def youtube_refresh(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    runtime = request.app.state.runtime
    store = _store(request)
    stored = await _load_stored(store, "youtube")
    if stored is None or not stored.refresh_token:
        raise HTTPException(409, "no YouTube token with a refresh token is stored; "
                                 "connect one with GET /auth/youtube/start")
    async with _youtube_client(request, archive_settings(runtime.settings), store) as client:
        try:
            tokens = await client.refresh_tokens()
        except TaskError as exc:
            raise _upstream_error("youtube", "refresh token", exc) from None
    await audit(runtime.engine, principal.name, "oauth.youtube.refresh", "oauth:youtube")
    return {"status": "ok", "expiry": rfc3339(tokens.expires_at),
            "access_token_present": bool(tokens.access_token),
            "refresh_token_present": bool(tokens.refresh_token)}
