"""The shell: login, logout, navigation by role, offline API docs, flash messages."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import sign_in
from tests.e2e.harness import screenshot_all


def test_login_shows_user_role_and_logout_revokes_the_session(open_page, server):
    page, _errors = open_page(None)
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    screenshot_all(page, "login")

    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    # The API's own message for the same mistake.
    expect(page.locator(".flash-error")).to_have_text("invalid username or password")

    sign_in(page, server, "admin")
    expect(page.get_by_test_id("user")).to_contain_text("admin")
    expect(page.locator(".role")).to_have_text("admin")
    screenshot_all(page, "home")
    session = next(c for c in page.context.cookies() if c["name"] == "rh_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    # The old token no longer authenticates, even presented by hand.
    response = page.request.get(server.url + "/v1/me", headers={"Authorization": f"Bearer {session['value']}"})
    assert response.status == 401


def test_viewer_sees_no_admin_navigation_and_gets_403_page(open_page, server):
    page, errors = open_page("viewer")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_contain_text("Jobs")
    expect(nav).not_to_contain_text("New encode")
    errors.allow("403")
    page.goto(server.url + "/encode/jobs/new")
    # The API's message for the same refusal.
    expect(page.locator(".error-message")).to_have_text("requires role operator")


def test_api_mutation_without_csrf_header_is_anonymous(open_page, server):
    page, _errors = open_page("admin")
    # A cross-site form can send the cookie but not the header: the API sees no credentials.
    response = page.request.post(server.url + "/v1/tokens", data={"name": "x"})
    assert response.status == 401
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "rh_csrf")
    response = page.request.post(server.url + "/v1/tokens", data={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert response.status == 201


def test_swagger_ui_and_redoc_render_offline(open_page, server):
    page, errors = open_page(None)
    # ReDoc's sidebar logo points at its vendor's site; the page's policy refuses it.
    errors.allow("cdn.redoc.ly")
    outside: list[str] = []

    def record(request) -> None:
        if request.url.startswith((server.url, "data:", "blob:")):
            return
        failure = request.failure or ""
        # Refused by the page's Content-Security-Policy before anything was sent.
        if failure not in ("csp", "net::ERR_BLOCKED_BY_CSP"):
            outside.append(f"{request.url} ({failure or 'sent'})")

    page.on("requestfinished", record)
    page.on("requestfailed", record)
    page.goto(server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("reelhouse")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    page.goto(server.url + "/redoc")
    expect(page.get_by_role("heading", level=1)).to_contain_text("reelhouse")
    assert outside == [], f"requests left the machine: {outside}"


def test_keyboard_reaches_the_skip_link_first_and_then_the_navigation(open_page, server):
    page, _errors = open_page("operator")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    expect(page.locator(":focus")).to_have_attribute("id", "content")
    page.goto(server.url + "/")
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert order == ["Skip to content", "reelhouse", "VODs", "Channels"]
