"""The shell's own pages: home, login, logout, and the offline API documentation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reelhouse.core.http.deps import RuntimeDep
from reelhouse.core.http.status import engine_snapshot
from reelhouse.core.security import users as user_store
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import auth_service, check_login_rate
from reelhouse.web.session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    cookie_options,
    csrf_matches,
    parse_cookies,
    revoke_session_token,
)
from reelhouse.web.settings import WebSettings
from reelhouse.web.shell import AnyPage, Page, ViewerPage

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only same-site paths: `//evil.example` and `https://...` would make login an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/", response_class=HTMLResponse)
async def home(page: ViewerPage, runtime: RuntimeDep) -> HTMLResponse:
    snapshot = await engine_snapshot(runtime)
    return page.render(
        "web/home.html",
        job_counts=snapshot["job_counts"],
        queue_depth=sum(count for _priority, count in snapshot["by_priority"]),
        breakers=snapshot["breakers"],
    )


@router.get("/login", response_class=HTMLResponse)
async def login_form(page: AnyPage, next: str = "/") -> Response:
    if page.user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page.render("web/login.html", next=safe_next(next), username="", oidc_name=oidc_name(page.request))


def oidc_name(request: Request) -> str | None:
    """The single sign-on button's label when OIDC is configured."""
    oidc = auth_service(request).oidc
    return oidc.settings.display_name if oidc is not None else None


def _login_failed(page: Page, message: str, username: str, next_path: str) -> HTMLResponse:
    # The form shown again with the API's message, as a normal page: a 401 document would
    # also be logged as an error in the browser's console.
    return page.shell.render(
        page.request,
        None,
        "web/login.html",
        {"next": next_path, "username": username, "oidc_name": oidc_name(page.request)},
        flashes=[("error", message)],
    )


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    page: AnyPage,
    runtime: RuntimeDep,
    username: Annotated[str, Form(max_length=120)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    target = safe_next(next)
    if not csrf_matches(parse_cookies(request.headers.get("cookie", "")).get(CSRF_COOKIE), csrf):
        return _login_failed(page, "the form expired; please sign in again", username, target)
    if not username or not password:
        return _login_failed(page, "username and password required", username, target)
    try:
        check_login_rate(request, username)
    except HTTPException as exc:
        return _login_failed(page, str(exc.detail), username, target)
    engine = runtime.engine
    auth = auth_service(request)
    try:
        # The same check as POST /auth/login: argon2 in the low-priority pool, off the loop.
        principal = await auth.check_password(username, password)
    except HTTPException as exc:
        return _login_failed(page, str(exc.detail), username, target)
    if principal is None or principal.user_id is None:
        await audit(engine, "anonymous", "auth.login.failed", None, {"via": "web"})
        return _login_failed(page, "invalid username or password", username, target)
    web = runtime.settings.section(WebSettings)
    policy = auth.session_policy
    session = await user_store.create_session(engine, principal.user_id, policy)  # sliding, SESSION_TTL
    await audit(engine, f"user:{principal.user_id}", "auth.login", f"user:{principal.user_id}", {"via": "web"})
    response = RedirectResponse(target, status_code=303)
    max_age = int(policy.max_age.total_seconds())
    response.set_cookie(
        SESSION_COOKIE, session.token, **cookie_options(web.cookie_secure, http_only=True, max_age=max_age)
    )
    return response


@router.post("/logout")
async def logout(
    request: Request, runtime: RuntimeDep, csrf: Annotated[str, Form(max_length=100)] = ""
) -> RedirectResponse:
    cookies = parse_cookies(request.headers.get("cookie", ""))
    token = cookies.get(SESSION_COOKIE)
    # Without the form's token a cross-site post could sign people out; ignore it then.
    if token and csrf_matches(cookies.get(CSRF_COOKIE), csrf):
        principal = await user_store.authenticate_token(runtime.engine, token)
        if principal is not None and await revoke_session_token(runtime.engine, token):
            actor = f"user:{principal.user_id}"
            await audit(runtime.engine, actor, "auth.logout", actor, {"via": "web"})
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    return RedirectResponse("/", status_code=303)


# The documentation pages load only this server's files; ReDoc's sidebar would otherwise fetch
# its vendor's logo from the internet.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="reelhouse API",
        swagger_js_url="/static/vendor/swagger-ui.js",
        swagger_css_url="/static/vendor/swagger-ui.css",
        swagger_favicon_url="/static/web/favicon.svg",
        # The default validator badge would call an outside service.
        swagger_ui_parameters={"validatorUrl": None},
    )
    return _offline(page)


@router.get("/redoc", response_class=HTMLResponse)
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title="reelhouse API",
        redoc_js_url="/static/vendor/redoc.js",
        redoc_favicon_url="/static/web/favicon.svg",
        with_google_fonts=False,
    )
    return _offline(page)
