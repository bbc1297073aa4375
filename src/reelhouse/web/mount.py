"""`install_web(app, runtime)`: what `create_app` calls to serve the browser UI."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from reelhouse.core.runtime import Runtime
from reelhouse.web import oidc, routes
from reelhouse.web.admin import admin_pages
from reelhouse.web.assets import find_node_modules, vendor_router
from reelhouse.web.ops import ops_pages
from reelhouse.web.session import SessionCookieAuth
from reelhouse.web.settings import WebSettings
from reelhouse.web.shell import LoginRequired, PageError, Shell, login_url, page_principal

STATIC = Path(__file__).parent / "static"


def install_web(app: FastAPI, runtime: Runtime) -> Shell:
    settings = runtime.settings.section(WebSettings)
    # The shell's own page sets come after the domains' in the navigation.
    for core_pages in (ops_pages(), admin_pages()):
        if all(existing.name != core_pages.name for existing in runtime.pages):
            runtime.add_pages(core_pages)
    if Shell in runtime.components:
        shell = runtime.component(Shell)
    else:
        shell = Shell(runtime.pages, secure_cookies=settings.cookie_secure)
        runtime.provide(shell)
    app.mount("/static/web", StaticFiles(directory=STATIC), name="static-web")
    for pages in runtime.pages:
        if pages.static is not None:
            app.mount(f"/static/{pages.name}", StaticFiles(directory=pages.static), name=f"static-{pages.name}")
    app.include_router(vendor_router(find_node_modules(settings.node_modules)))
    app.include_router(routes.router)
    app.include_router(oidc.router)
    for pages in runtime.pages:
        app.include_router(pages.router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def to_login(_request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    @app.exception_handler(PageError)
    async def error_page(request: Request, exc: PageError) -> HTMLResponse:
        principal = await page_principal(request)
        return shell.render(
            request, principal, "web/error.html", {"status": exc.status, "message": exc.message}, status=exc.status
        )

    app.add_middleware(SessionCookieAuth)
    return shell
