"""Browser sign-in through the OIDC provider (authorization code flow with PKCE).

`GET /auth/oidc/login?next=/path` sends the browser to the provider with a fresh state, nonce
and PKCE challenge; what it must bring back is sealed (AES-GCM under the master key) in the
`rh_oidc` cookie: HttpOnly, SameSite=Lax (it has to survive the provider's redirect back, a
cross-site top-level navigation) and scoped to /auth/oidc, for ten minutes.
`GET /auth/oidc/callback` checks the state against that cookie, exchanges the code with the
verifier, verifies the ID token (core/security/oidc.py), provisions or updates the local user
and starts an ordinary core session (`SESSION_TTL`, the same `rh_session` cookie as the
password form). The session cookie is SameSite=Strict, which a browser withholds on the
remainder of a navigation that started at another site, so the callback answers with a small
page that moves on to `next` itself (a same-site navigation that carries the new cookie)
rather than with a redirect.

Failures show the login page with the reason (400 for a mismatched or expired attempt, 403 for
an account without a role, 503 when the provider cannot be reached), never a 500.
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reelhouse.core.http.deps import RuntimeDep
from reelhouse.core.runtime import Runtime
from reelhouse.core.security import users as user_store
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import auth_service
from reelhouse.core.security.oidc import PENDING_LOGIN_TTL, OidcClient, OidcError, PendingLogin
from reelhouse.web.routes import oidc_name, safe_next
from reelhouse.web.session import SESSION_COOKIE, cookie_options, parse_cookies
from reelhouse.web.settings import WebSettings
from reelhouse.web.shell import AnyPage, Page

router = APIRouter(include_in_schema=False)
PENDING_COOKIE = "rh_oidc"
PENDING_PATH = "/auth/oidc"
CALLBACK_PATH = "/auth/oidc/callback"


def redirect_uri(request: Request, runtime: Runtime, oidc: OidcClient) -> str:
    if oidc.settings.redirect_url:
        return oidc.settings.redirect_url
    base = runtime.settings.server.public_base_url.rstrip("/") or str(request.base_url).rstrip("/")
    return base + CALLBACK_PATH


def _failed(page: Page, message: str, status: int, next_path: str = "/") -> HTMLResponse:
    response = page.shell.render(
        page.request,
        None,
        "web/login.html",
        {"next": next_path, "username": "", "oidc_name": oidc_name(page.request)},
        status=status,
        flashes=[("error", message)],
    )
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    return response


@router.get("/auth/oidc/login")
async def oidc_login(
    page: AnyPage, runtime: RuntimeDep, next: Annotated[str, Query(max_length=2000)] = "/"
) -> Response:
    request = page.request
    auth = auth_service(request)
    if auth.oidc is None:
        return _failed(page, "single sign-on is not configured (OIDC_ISSUER_URL, OIDC_CLIENT_ID)", 404)
    pending = PendingLogin.new(safe_next(next), redirect_uri(request, runtime, auth.oidc))
    try:
        target = await auth.oidc.authorization_url(pending)
    except OidcError as exc:
        return _failed(page, exc.message, exc.status, pending.next)
    web = runtime.settings.section(WebSettings)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        PENDING_COOKIE,
        pending.seal(auth.keys.keyring()),
        max_age=PENDING_LOGIN_TTL,
        path=PENDING_PATH,
        httponly=True,
        secure=web.cookie_secure,
        samesite="lax",
    )
    return response


@router.get(CALLBACK_PATH)
async def oidc_callback(
    page: AnyPage,
    runtime: RuntimeDep,
    code: Annotated[str, Query(max_length=2048)] = "",
    state: Annotated[str, Query(max_length=512)] = "",
    error: Annotated[str, Query(max_length=200)] = "",
    error_description: Annotated[str, Query(max_length=500)] = "",
    iss: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    request = page.request
    auth = auth_service(request)
    if auth.oidc is None:
        return _failed(page, "single sign-on is not configured (OIDC_ISSUER_URL, OIDC_CLIENT_ID)", 404)
    sealed = parse_cookies(request.headers.get("cookie", "")).get(PENDING_COOKIE)
    if error:
        detail = f": {error_description}" if error_description else ""
        return _failed(page, f"the identity provider did not sign you in: {error}{detail}", 400)
    if iss and iss.rstrip("/") != auth.oidc.issuer:
        # RFC 9207: a response from another provider (a mix-up attack) is not ours to take.
        return _failed(page, "the sign-in response comes from another identity provider", 400)
    if not sealed:
        return _failed(page, "the sign-in attempt is not recognised (no sign-in cookie); start again", 400)
    engine = runtime.engine
    try:
        pending = PendingLogin.unseal(auth.keys.keyring(), sealed)
        identity = await auth.oidc.complete_login(pending, code, state)
    except OidcError as exc:
        await audit(engine, "anonymous", "auth.login.failed", None, {"via": "oidc", "reason": exc.message[:120]})
        return _failed(page, exc.message, exc.status)
    if identity.role is None:
        await audit(engine, "anonymous", "auth.login.failed", None, {"via": "oidc", "reason": "no_role"})
        return _failed(page, "your account at the identity provider has no reelhouse role; ask an admin", 403)
    principal, created = await user_store.provision_oidc_user(
        engine, identity.issuer, identity.subject, identity.username, identity.role, login=True
    )
    if principal is None or principal.user_id is None:
        await audit(engine, "anonymous", "auth.login.failed", None, {"via": "oidc", "reason": "locked"})
        return _failed(page, "this user is locked", 403)
    actor = f"user:{principal.user_id}"
    if created:
        await audit(engine, "oidc", "user.create", actor, {"role": principal.role, "via": "oidc"})
    policy = auth.session_policy
    session = await user_store.create_session(engine, principal.user_id, policy)  # sliding, SESSION_TTL
    await audit(engine, actor, "auth.login", actor, {"via": "oidc", "role": principal.role})
    target = html.escape(safe_next(pending.next), quote=True)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>Signed in</title>'
        '<link rel="icon" href="/static/web/favicon.svg" type="image/svg+xml"></head>'
        f'<body><p>Signed in. <a href="{target}">Continue</a></p></body></html>'
    )
    response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
    web = runtime.settings.section(WebSettings)
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        **cookie_options(web.cookie_secure, http_only=True, max_age=int(policy.max_age.total_seconds())),
    )
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    return response
