"""CSRF: browsers attach cookies and Basic credentials to cross-site requests by themselves, so
changes made with them must come from our own pages; Bearer tokens are unaffected. No GET route
changes state."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import func, select

from reelhouse.core.db.models import audit_log, jobs, kv, tasks
from reelhouse.core.security.users import SessionPolicy, create_session

from .conftest import PASSWORD, admin, basic, bearer, login, make_user

EVIL = {"Origin": "https://evil.example"}


async def test_basic_changes_from_another_site_are_refused(client, runtime):
    await make_user(runtime, "browser")
    creds = basic("browser", PASSWORD)
    body = {"name": "t"}
    assert (await client.post("/v1/tokens", headers={**creds, **EVIL}, json=body)).status_code == 403
    cross = {**creds, "Sec-Fetch-Site": "cross-site"}
    assert (await client.post("/v1/tokens", headers=cross, json=body)).status_code == 403
    assert (await client.post("/v1/tokens", headers=creds, json=body)).status_code == 201, "curl sends no Origin"
    same = {**creds, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert (await client.post("/v1/tokens", headers=same, json=body)).status_code == 201
    assert (await client.get("/v1/me", headers={**creds, **EVIL})).status_code == 200, "reads are not changes"


async def test_cookie_sessions_need_the_csrf_token_on_changes(client, runtime):
    """The web UI's session cookie (reelhouse.web.session) reaches the API as a Bearer credential,
    on changes only with the double-submit token."""
    user_id = await make_user(runtime, "webuser")
    session = await create_session(runtime.engine, user_id, SessionPolicy())
    client.cookies.set("rh_session", session.token)
    client.cookies.set("rh_csrf", "form-token-123")
    assert (await client.get("/v1/me")).json()["name"] == "webuser", "the cookie authenticates reads"
    refused = await client.post("/v1/tokens", json={"name": "x"})
    assert refused.status_code == 401
    wrong = await client.post("/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "another"})
    assert wrong.status_code == 401
    ok = await client.post("/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "form-token-123"})
    assert ok.status_code == 201
    out = await client.post("/auth/logout", headers={"X-CSRF-Token": "form-token-123"})
    assert out.status_code == 200 and out.json()["revoked"] is True
    assert (await client.get("/v1/me")).status_code == 401


async def test_bearer_tokens_are_not_affected_and_cross_site_logins_are_refused(client, runtime):
    await make_user(runtime, "scripted")
    token = (await login(client, "scripted")).json()["token"]
    assert (await client.post("/v1/tokens", headers={**bearer(token), **EVIL}, json={"name": "y"})).status_code == 201
    forged = await client.post("/auth/login", headers=EVIL, json={"username": "scripted", "password": PASSWORD})
    assert forged.status_code == 403


# GET routes that must not be walked here: none (the OAuth starts are POSTs behind a GET page).
PENDING_GET_MUTATIONS: set[str] = set()


async def _counts(engine) -> tuple[int, ...]:
    async with engine.connect() as conn:
        return tuple(
            [
                (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in (audit_log, jobs, tasks, kv)
            ]
        )


async def test_no_get_route_changes_state(app, client, runtime):
    def streams(op: dict) -> bool:  # an event stream never ends: it is read elsewhere
        return any("text/event-stream" in (r.get("content") or {}) for r in op.get("responses", {}).values())

    gets = [
        path
        for path, ops in app.openapi()["paths"].items()
        if "get" in ops
        and path not in PENDING_GET_MUTATIONS
        and not path.endswith("/stream")
        and not path.startswith("/v1/events/")
        and not streams(ops["get"])
    ]
    assert len(gets) > 20
    before = await _counts(runtime.engine)
    for template in gets:
        path = re.sub(r"\{[^}]+\}", "1", template)
        try:
            response = await asyncio.wait_for(client.get(path, headers=admin()), 30)
        except TimeoutError:
            raise AssertionError(f"GET {template} did not answer in 30 s (a stream not marked as one?)") from None
        assert response.status_code < 500, (template, response.status_code, response.text[:200])
    assert await _counts(runtime.engine) == before, "a GET route wrote to the database"
