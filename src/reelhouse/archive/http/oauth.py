"""OAuth connect flows for Twitch and YouTube, and token refresh.

vod-tender let any visitor start a flow and kept `state` in one process's memory (§12.24):
anyone could bind their own account, and a second replica rejected every callback. Here:
- only an admin may start a connect, and only with a POST: `GET .../start` (what an admin opens
  in the browser) answers a page whose button posts to the same URL, so no link, image or
  prefetch can start a flow;
- `state` is random, single-use, expires after `STATE_TTL`, and lives in the database
  (store/oauth_state.py), so any API node can finish the flow;
- it is bound to the browser that started: `start` sets an HttpOnly cookie whose hash is stored
  with the state, and the callback must present it. A leaked callback URL is useless elsewhere.
The callback itself cannot require an Authorization header (it is the provider's redirect of the
admin's browser); the cookie binding is what ties it to the admin who started.
Tokens go through the encrypted `TokenStore`; responses say whether tokens exist, never what
they are. Provider failures become HTTP errors in core's one handler (core/http/errors.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from reelhouse.archive.http.schemas import AuthorizeUrl, TwitchConnected, TwitchRefreshed, YouTubeConnected, rfc3339
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store.oauth_state import OAuthStateStore
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.twitch.oauth import TwitchOAuth
from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import Admin, AppSettings, component
from reelhouse.core.http.errors import errors
from reelhouse.core.providers.youtube import YouTubeClient
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.crypto import CryptoError
from reelhouse.core.security.http_auth import resolve_principal
from reelhouse.core.security.users import Principal

router = APIRouter(tags=["oauth"])
Services = Annotated[ArchiveServices, component(ArchiveServices)]
STATE_TTL = timedelta(minutes=10)
PROVIDERS = ("twitch", "youtube")


async def admin_in_browser(request: Request) -> Principal:
    """`require_admin`, except that the 401 asks for Basic credentials: `start` is opened in the
    admin's browser (the cookie must land there), and a browser prompts for Basic, not Bearer."""
    principal = await resolve_principal(request)
    if principal is None:
        raise HTTPException(
            401, "authentication required", headers={"WWW-Authenticate": 'Basic realm="reelhouse", charset="UTF-8"'}
        )
    if not principal.has_role("admin"):
        raise HTTPException(403, "requires role admin")
    return principal


admin_in_browser.required_role = "admin"  # type: ignore[attr-defined]  # read by the route audit test
BrowserAdmin = Annotated[Principal, Depends(admin_in_browser)]


class OAuthFlows:
    """The connect flows of one request: clients built from settings, state kept in kv."""

    def __init__(self, services: ArchiveServices, public_base_url: str) -> None:
        self.services = services
        self.settings = services.settings
        self.flow = services.oauth
        self.public_base_url = public_base_url.rstrip("/")
        self.states = OAuthStateStore(services.vods.engine, STATE_TTL)

    @property
    def tokens(self) -> TokenStore:
        return self.services.tokens

    def redirect_uri(self, provider: str) -> str:
        configured = self.flow.twitch_redirect_uri if provider == "twitch" else self.settings.yt_redirect_uri
        if configured:
            return configured
        if self.public_base_url:
            return f"{self.public_base_url}/auth/{provider}/callback"
        env = "TWITCH_REDIRECT_URI" if provider == "twitch" else "YT_REDIRECT_URI"
        raise HTTPException(400, f"{env} (or PUBLIC_BASE_URL) is not set")

    def twitch(self) -> TwitchOAuth:
        settings = self.settings
        if not settings.twitch_client_id or not settings.twitch_client_secret:
            raise HTTPException(400, "TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET must be set")
        return TwitchOAuth(
            settings.twitch_client_id,
            settings.twitch_client_secret,
            redirect_uri=self.redirect_uri("twitch"),
            scopes=self.flow.scopes("twitch"),
            auth_base=settings.twitch_auth_base,
        )

    def youtube(self) -> YouTubeClient:
        settings = self.settings
        if not settings.yt_client_id or not settings.yt_client_secret:
            raise HTTPException(400, "YT_CLIENT_ID and YT_CLIENT_SECRET must be set")
        load, save = self.tokens.youtube_callbacks("")
        return YouTubeClient(
            settings.yt_client_id,
            settings.yt_client_secret,
            load_tokens=load,
            save_tokens=save,
            redirect_uri=self.redirect_uri("youtube"),
            scopes=self.flow.scopes("youtube"),
            api_base=settings.youtube_api_base,
            oauth_base=settings.youtube_oauth_base,
            max_attempts=2,
        )

    async def stored(self, provider: str) -> Any:
        try:
            return await self.tokens.load(provider)
        except CryptoError as exc:
            # e.g. the master key changed without MASTER_ENCRYPTION_KEY_PREVIOUS: say so, never 500.
            raise HTTPException(409, f"stored {provider} token cannot be decrypted: {exc}") from None

    async def start(self, request: Request, provider: str, principal: Principal) -> Response:
        state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        client: Any = self.twitch() if provider == "twitch" else self.youtube()
        try:
            url = client.authorize_url(state)
        finally:
            await client.aclose()
        await self.states.save(f"{provider}:{_digest(state)}", {"binding": _digest(binding), "actor": principal.name})
        await audit(self.services.vods.engine, principal.name, f"oauth.{provider}.start", f"oauth:{provider}")
        if "application/json" in request.headers.get("accept", ""):
            body = AuthorizeUrl(authorize_url=url, expires_in=int(STATE_TTL.total_seconds()))
            response: Response = JSONResponse(body.model_dump())
        else:
            response = RedirectResponse(url, status_code=303)
        # SameSite=Lax: the callback is a top-level navigation from the provider's site, which
        # Strict would strip the cookie from.
        response.set_cookie(
            _cookie_name(provider),
            binding,
            max_age=int(STATE_TTL.total_seconds()),
            path=f"/auth/{provider}",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def consume(self, request: Request, provider: str) -> dict[str, Any]:
        """Take the callback's state out of the store (whatever happens next, it is spent) and
        check its expiry and browser binding; returns the saved record."""
        params = request.query_params
        state = params.get("state")
        if not state:
            raise HTTPException(400, "missing state parameter")
        record = await self.states.take(f"{provider}:{_digest(state)}")
        if record is None:
            raise HTTPException(400, "invalid or already used state; start the connection again")
        if record["expired"]:
            raise HTTPException(400, "state expired; start the connection again")
        cookie = request.cookies.get(_cookie_name(provider), "")
        if not cookie or not hmac.compare_digest(_digest(cookie), record["binding"]):
            raise HTTPException(400, "state was not issued to this browser session; start the connection again")
        error = params.get("error")
        if error:
            detail = params.get("error_description") or error
            raise HTTPException(400, f"authorization was not granted: {detail[:200]}")
        if not params.get("code"):
            raise HTTPException(400, "missing code parameter")
        return record


def get_flows(services: Services, settings: AppSettings) -> OAuthFlows:
    return OAuthFlows(services, settings.server.public_base_url)


Flows = Annotated[OAuthFlows, Depends(get_flows)]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cookie_name(provider: str) -> str:
    return f"rh_oauth_{provider}"


def _finish(body: Any, provider: str) -> JSONResponse:
    response = JSONResponse(body.model_dump())
    response.delete_cookie(_cookie_name(provider), path=f"/auth/{provider}")
    return response


_START_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": AuthorizeUrl, "description": "with `Accept: application/json`: the URL to open"},
    303: {"description": "redirect to the provider's consent page"},
    **errors(400),
}
_CONFIRM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "a page whose button posts"},
}
_CONFIRM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Connect {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Connect {title}</h1>
<p>reelhouse will send you to {title} to grant access, then store the token encrypted.</p>
<form method="post" action="/auth/{provider}/start"><button type="submit">Continue to {title}</button></form>
</main></body></html>
"""


def _confirm(provider: str) -> HTMLResponse:
    title = "Twitch" if provider == "twitch" else "YouTube"
    return HTMLResponse(_CONFIRM_PAGE.format(title=title, provider=provider), headers={"Cache-Control": "no-store"})


_CALLBACK_QUERY = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string", "maxLength": 2048}}
        for name in ("code", "state", "error", "error_description")
    ]
}


@router.get(
    "/auth/twitch/start",
    response_class=HTMLResponse,
    responses=_CONFIRM_RESPONSES,
    summary="Connect a Twitch account (admin): a page whose button posts to this URL",
)
async def twitch_confirm(principal: BrowserAdmin) -> HTMLResponse:
    return _confirm("twitch")


@router.post(
    "/auth/twitch/start",
    response_class=Response,
    responses=_START_RESPONSES,
    summary="Start connecting a Twitch account (admin): redirects to Twitch",
)
async def twitch_start(request: Request, flows: Flows, principal: BrowserAdmin) -> Response:
    return await flows.start(request, "twitch", principal)


@router.get(
    "/auth/twitch/callback",
    response_model=TwitchConnected,
    responses=errors(400, 502, 503),
    openapi_extra=_CALLBACK_QUERY,
    summary="Twitch redirects here with code and state",
)
async def twitch_callback(request: Request, flows: Flows) -> JSONResponse:
    record = await flows.consume(request, "twitch")
    async with flows.twitch() as client:
        tokens = await client.exchange_code(request.query_params["code"])
    await flows.tokens.save(
        "twitch",
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        scope=" ".join(tokens.scopes),
    )
    await audit(flows.services.vods.engine, record["actor"], "oauth.twitch.connected", "oauth:twitch")
    expires_in = max(0, int((tokens.expires_at - utcnow()).total_seconds()))
    return _finish(TwitchConnected(scopes=list(tokens.scopes), expires_in=expires_in), "twitch")


@router.post(
    "/auth/twitch/refresh",
    response_model=TwitchRefreshed,
    responses=errors(400, 409, 502, 503),
    summary="Refresh the stored Twitch user token now (admin)",
)
async def twitch_refresh(flows: Flows, principal: Admin) -> TwitchRefreshed:
    stored = await flows.stored("twitch")
    if stored is None or not stored.refresh_token:
        raise HTTPException(
            409,
            "no Twitch user token with a refresh token is stored; "
            "connect one with POST /auth/twitch/start (or open it in a browser)",
        )
    async with flows.twitch() as client:
        tokens = await client.refresh(stored.refresh_token)
    await flows.tokens.save(
        "twitch",
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        scope=" ".join(tokens.scopes) or stored.scope,
    )
    await audit(flows.services.vods.engine, principal.name, "oauth.twitch.refresh", "oauth:twitch")
    return TwitchRefreshed(
        expires_at=rfc3339(tokens.expires_at),
        expires_in=max(0, int((tokens.expires_at - utcnow()).total_seconds())),
        scopes=list(tokens.scopes) or stored.scope.split(),
    )


@router.get(
    "/auth/youtube/start",
    response_class=HTMLResponse,
    responses=_CONFIRM_RESPONSES,
    summary="Connect a YouTube channel (admin): a page whose button posts to this URL",
)
async def youtube_confirm(principal: BrowserAdmin) -> HTMLResponse:
    return _confirm("youtube")


@router.post(
    "/auth/youtube/start",
    response_class=Response,
    responses=_START_RESPONSES,
    summary="Start connecting a YouTube channel (admin): redirects to Google",
)
async def youtube_start(request: Request, flows: Flows, principal: BrowserAdmin) -> Response:
    return await flows.start(request, "youtube", principal)


@router.get(
    "/auth/youtube/callback",
    response_model=YouTubeConnected,
    responses=errors(400, 502, 503),
    openapi_extra=_CALLBACK_QUERY,
    summary="Google redirects here with code and state",
)
async def youtube_callback(request: Request, flows: Flows) -> JSONResponse:
    record = await flows.consume(request, "youtube")
    async with flows.youtube() as client:
        tokens = await client.exchange_code(request.query_params["code"])  # saved via the store
    await audit(flows.services.vods.engine, record["actor"], "oauth.youtube.connected", "oauth:youtube")
    body = YouTubeConnected(
        expiry=rfc3339(tokens.expires_at),
        access_token_present=bool(tokens.access_token),
        refresh_token_present=bool(tokens.refresh_token),
    )
    return _finish(body, "youtube")


@router.post(
    "/auth/youtube/refresh",
    response_model=YouTubeConnected,
    responses=errors(400, 409, 502, 503),
    summary="Refresh the stored YouTube token now (admin)",
)
async def youtube_refresh(flows: Flows, principal: Admin) -> YouTubeConnected:
    stored = await flows.stored("youtube")
    if stored is None or not stored.refresh_token:
        raise HTTPException(
            409,
            "no YouTube token with a refresh token is stored; "
            "connect one with POST /auth/youtube/start (or open it in a browser)",
        )
    async with flows.youtube() as client:
        tokens = await client.refresh_tokens()
    await audit(flows.services.vods.engine, principal.name, "oauth.youtube.refresh", "oauth:youtube")
    return YouTubeConnected(
        expiry=rfc3339(tokens.expires_at),
        access_token_present=bool(tokens.access_token),
        refresh_token_present=bool(tokens.refresh_token),
    )
