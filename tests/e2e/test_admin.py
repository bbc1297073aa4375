"""Administration in the browser: users, API tokens, the audit log and its chain check."""

from __future__ import annotations

import re
import sqlite3

import httpx
from playwright.sync_api import expect

from tests.e2e.harness import screenshot_all
from tests.e2e.test_encode import accept_confirmation


def test_admin_creates_a_user_who_can_then_sign_in(open_page, server):
    page, _errors = open_page("admin")
    page.goto(server.url + "/admin/users")
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label(re.compile("^Password")).fill("a long password")
    page.get_by_label("Role").select_option("operator")
    page.get_by_role("button", name="Create user").click()
    row = page.locator("tr[data-user='newcomer']")
    expect(row).to_contain_text("operator")
    screenshot_all(page, "admin-users")
    assert httpx.get(server.url + "/v1/me", auth=("newcomer", "a long password")).json()["role"] == "operator"


def test_api_token_created_in_the_page_works_once_shown(open_page, server):
    page, _errors = open_page("operator")
    page.goto(server.url + "/admin/tokens")
    page.get_by_label("Name").fill("ci-deploy")
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_test_id("new-token")
    expect(token).to_have_text(re.compile(r"^rh_"))
    secret = token.inner_text()
    me = httpx.get(server.url + "/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["name"] == "operator"
    screenshot_all(page, "admin-tokens")
    page.reload()
    # Listed by name and prefix only: the secret is never shown again.
    expect(page.locator("tbody")).to_contain_text("ci-deploy")
    expect(page.locator("tbody")).not_to_contain_text(secret)


def test_api_token_revoked_from_the_page_stops_working(open_page, server):
    with server.api("operator") as api:
        created = api.post("/v1/tokens", json={"name": "to-revoke"}).json()
    page, _errors = open_page("operator")
    page.goto(server.url + "/admin/tokens")
    row = page.locator(f"tr[data-token-id='{created['id']}']")
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    accept_confirmation(page)
    expect(row.get_by_test_id("token-state")).to_have_text("revoked")
    assert httpx.get(server.url + "/v1/me", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401


def test_user_locked_from_the_page_is_refused(open_page, server):
    with server.api() as api:
        api.post("/v1/users", json={"username": "tolock", "password": "a long password", "role": "viewer"})
    page, _errors = open_page("admin")
    page.goto(server.url + "/admin/users")
    row = page.locator("tr[data-user='tolock']")
    row.get_by_role("button", name=re.compile("^Lock")).click()
    accept_confirmation(page)
    expect(row.get_by_test_id("user-state")).to_have_text("locked")
    assert httpx.get(server.url + "/v1/me", auth=("tolock", "a long password")).status_code == 401


def test_audit_chain_verified_from_the_page_and_tampering_found(open_page, server):
    page, _errors = open_page("admin")
    page.goto(server.url + "/admin/audit")
    expect(page.locator("tbody")).to_contain_text("auth.login")
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.get_by_test_id("audit-result")).to_have_text(re.compile(r"^Audit log intact: \d+ rows verified"))
    screenshot_all(page, "admin-audit")

    database = sqlite3.connect(server.data_dir / "reelhouse.db")
    try:
        first, actor = database.execute("SELECT id, actor FROM audit_log ORDER BY id LIMIT 1").fetchone()
        database.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = ?", (first,))
        database.commit()
        page.get_by_role("button", name="Verify the chain").click()
        expect(page.get_by_test_id("audit-result")).to_have_text(
            re.compile(rf"^Audit log BROKEN at row id {first}: content does not match")
        )
    finally:
        # Later tests in this session read the same log; put the row back.
        database.execute("UPDATE audit_log SET actor = ? WHERE id = ?", (actor, first))
        database.commit()
        database.close()
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.get_by_test_id("audit-result")).to_have_text(re.compile(r"^Audit log intact"))


def test_runtime_settings_are_overridden_and_reset_from_the_page(open_page, server):
    page, errors = open_page("admin")
    page.goto(server.url + "/admin/settings")
    row = page.locator("tr[data-key='RETENTION_KEEP_COUNT']")
    expect(row.get_by_test_id("setting-source")).to_have_text("environment")
    screenshot_all(page, "admin-settings")

    errors.allow("400")
    expected = server.api().put("/config", json={"RETENTION_KEEP_COUNT": "lots"}).json()["error"]
    row.get_by_role("textbox").fill("lots")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".flash-error")).to_contain_text(expected)

    row.get_by_role("textbox").fill("7")
    page.get_by_role("button", name="Save changes").click()
    expect(row.get_by_test_id("setting-source")).to_have_text("override")
    assert server.api().get("/config").json()["RETENTION_KEEP_COUNT"] == "7"

    row.get_by_role("button", name=re.compile("^Reset")).click()
    accept_confirmation(page)
    expect(row.get_by_test_id("setting-source")).to_have_text("environment")
