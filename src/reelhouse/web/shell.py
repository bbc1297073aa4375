"""The shell that renders every page: one Jinja2 environment over the shell's and the domains'
templates, the navigation built from what domains registered, and the page dependencies.

A domain's page route asks for a `Page` of the role it needs and renders its template:

    @router.get("/encode/jobs", response_class=HTMLResponse, include_in_schema=False)
    async def jobs_page(page: ViewerPage, engine: Engine) -> HTMLResponse:
        return page.render("encode/jobs.html", jobs=await control.list_jobs(engine))

An anonymous caller is sent to the login page; a signed-in one without the role gets the 403
page with the API's message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, PrefixLoader, select_autoescape

from reelhouse.config import SettingsSection
from reelhouse.core.http.deps import get_runtime
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.core.security.http_auth import resolve_principal
from reelhouse.core.security.users import Principal
from reelhouse.web import filters
from reelhouse.web.session import CSRF_COOKIE, cookie_options, new_csrf_token, parse_cookies

TEMPLATES = Path(__file__).parent / "templates"
S = TypeVar("S", bound=SettingsSection)


class PageError(Exception):
    """An error shown as a page with the layout (the same message the API would give)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class NavSection:
    title: str
    links: list[NavLink]


@dataclass
class Shell:
    page_sets: list[PageSet]
    secure_cookies: bool = False
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        loaders = {"web": FileSystemLoader(TEMPLATES)}
        loaders.update({pages.name: FileSystemLoader(pages.templates) for pages in self.page_sets})
        self.env = Environment(
            loader=PrefixLoader(loaders, delimiter="/"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(filters.ALL)
        self.env.globals["static_url"] = static_url

    def navigation(self, principal: Principal | None) -> list[NavSection]:
        if principal is None:
            return []
        sections = [
            NavSection(pages.title, [link for link in pages.nav if principal.has_role(link.role)])
            for pages in self.page_sets
        ]
        return [section for section in sections if section.links]

    def render(
        self,
        request: Request,
        principal: Principal | None,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        flashes: Iterable[tuple[str, str]] = (),
    ) -> HTMLResponse:
        csrf = parse_cookies(request.headers.get("cookie", "")).get(CSRF_COOKIE)
        fresh_csrf = None if csrf else new_csrf_token()
        html = self.env.get_template(template).render(
            request=request,
            path=request.url.path,
            user=principal,
            nav=self.navigation(principal),
            csrf=csrf or fresh_csrf,
            flashes=list(flashes),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if fresh_csrf:
            response.set_cookie(CSRF_COOKIE, fresh_csrf, **cookie_options(self.secure_cookies, http_only=False))
        return response


def static_url(path: str) -> str:
    """`vendor/htmx.js`, `web/app.css`, `<domain>/x.js` -> their URL under /static."""
    return f"/static/{path}"


@dataclass(frozen=True)
class Page:
    """What a page route renders with: the shell, the request and the signed-in user."""

    shell: Shell
    request: Request
    user: Principal | None

    def section(self, kind: type[S]) -> S:
        """A settings section of the running system (`WebSettings`, a domain's own...)."""
        return get_runtime(self.request).settings.section(kind)

    def can(self, role: str) -> bool:
        return self.user is not None and self.user.has_role(role)

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        return self.shell.render(self.request, self.user, template, context, status=status_code)


async def page_principal(request: Request) -> Principal | None:
    """The signed-in user, or None; an expired or revoked session counts as signed out."""
    try:
        return await resolve_principal(request)
    except HTTPException:
        return None


def page_for(role: str | None) -> Callable[[Request], Awaitable[Page]]:
    """Dependency: a `Page` for callers with `role` (None: anyone, signed in or not)."""

    async def dependency(request: Request) -> Page:
        shell: Shell = get_runtime(request).component(Shell)
        principal = await page_principal(request)
        if role is not None:
            if principal is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise LoginRequired(target)
            if not principal.has_role(role):
                raise PageError(403, f"requires role {role}")
        return Page(shell, request, principal)

    return dependency


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


AnyPage = Annotated[Page, Depends(page_for(None))]
ViewerPage = Annotated[Page, Depends(page_for("viewer"))]
OperatorPage = Annotated[Page, Depends(page_for("operator"))]
AdminPage = Annotated[Page, Depends(page_for("admin"))]
