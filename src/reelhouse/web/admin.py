"""Administration pages (core-level): users, API tokens, the audit log and its verification.

Actions are the API's own routes, called by the page with the session. Where the running
API has no route for an action (user lock, token revoke and token expiry come with the
security work), the page says so instead of showing a control that cannot work.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from reelhouse.core.http.deps import BeforeId, RuntimeDep
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.core.security.audit import verify
from reelhouse.core.security.users import ROLES
from reelhouse.web import admin_data
from reelhouse.web.shell import TEMPLATES, AdminPage, ViewerPage

AUDIT_PAGE = 50

router = APIRouter(include_in_schema=False)


def api_routes(request: Request) -> set[tuple[str, str]]:
    """(METHOD, path template) of every documented API route of this app."""
    paths = request.app.openapi().get("paths", {})
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


def token_fields(request: Request) -> set[str]:
    schema = request.app.openapi().get("components", {}).get("schemas", {}).get("TokenRequest", {})
    return set(schema.get("properties", {}))


@router.get("/admin/users", response_class=HTMLResponse)
async def users_page(page: AdminPage, runtime: RuntimeDep, request: Request) -> HTMLResponse:
    routes = api_routes(request)
    return page.render(
        "admin/users.html",
        users=await admin_data.list_users(runtime.engine),
        roles=ROLES,
        can_lock=("POST", "/v1/users/{user_id}/lock") in routes,
    )


@router.get("/admin/tokens", response_class=HTMLResponse)
async def tokens_page(page: ViewerPage, runtime: RuntimeDep, request: Request) -> HTMLResponse:
    assert page.user is not None
    everyone = page.user.has_role("admin")
    return page.render(
        "admin/tokens.html",
        tokens=await admin_data.list_tokens(runtime.engine, None if everyone else page.user.user_id or -1),
        everyone=everyone,
        can_revoke=("DELETE", "/v1/tokens/{token_id}") in api_routes(request),
        with_expiry="expires_in" in token_fields(request),
    )


@router.get("/admin/audit", response_class=HTMLResponse)
async def audit_page(page: AdminPage, runtime: RuntimeDep, before_id: BeforeId = None) -> HTMLResponse:
    rows = await admin_data.audit_page(runtime.engine, before_id, AUDIT_PAGE + 1)
    return page.render(
        "admin/audit.html",
        rows=rows[:AUDIT_PAGE],
        before_id=before_id,
        next_before=rows[AUDIT_PAGE - 1]["id"] if len(rows) > AUDIT_PAGE else None,
    )


@router.get("/admin/audit/verify", response_class=HTMLResponse)
async def audit_verify(page: AdminPage, runtime: RuntimeDep) -> HTMLResponse:
    """The chain checked now, row by row (what `reelhouse admin audit verify` does)."""
    return page.render("admin/audit_verify.html", result=await verify(runtime.engine))


@router.get("/admin/settings", response_class=HTMLResponse)
async def settings_page(page: AdminPage, runtime: RuntimeDep) -> HTMLResponse:
    """Runtime overrides of the safe keys (`PUT /config`): effective value, and whether it is
    an override or the environment's."""
    overrides = runtime.overrides
    current, stored = await overrides.current(), await overrides.load()
    keys = [{"key": key, "value": current.get(key, ""), "overridden": key in stored} for key in overrides.keys]
    return page.render("admin/settings.html", keys=keys)


def admin_pages() -> PageSet:
    return PageSet(
        name="admin",
        title="Admin",
        router=router,
        templates=TEMPLATES / "admin",
        nav=(
            NavLink("Users", "/admin/users", role="admin"),
            NavLink("API tokens", "/admin/tokens"),
            NavLink("Audit log", "/admin/audit", role="admin"),
            NavLink("Settings", "/admin/settings", role="admin"),
        ),
    )
