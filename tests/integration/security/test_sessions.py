"""Sessions expire and can be revoked; API tokens are named, listed and revoked; users can be
listed, locked, unlocked, re-passworded and deleted; logins are audited with ids only."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from reelhouse.core.db.models import api_tokens, audit_log
from reelhouse.core.db.types import utcnow
from reelhouse.core.security.users import create_api_token

from .conftest import PASSWORD, admin, bearer, login, make_user


async def test_logout_revokes_the_session_at_once(client, runtime):
    await make_user(runtime, "alice")
    session = (await login(client, "alice")).json()
    assert (await client.get("/v1/me", headers=bearer(session["token"]))).json()["name"] == "alice"
    out = await client.post("/auth/logout", headers=bearer(session["token"]))
    assert out.status_code == 200 and out.json() == {"revoked": True}
    assert (await client.get("/v1/me", headers=bearer(session["token"]))).status_code == 401


async def test_sessions_expire_when_idle_and_at_their_maximum_age(client, runtime):
    user_id = await make_user(runtime, "bob")
    token = (await login(client, "bob")).json()["token"]
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 200
    # Idle for longer than SESSION_TTL (12h): the session is over.
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.user_id == user_id)
            .values(last_used_at=utcnow() - timedelta(hours=13), expires_at=utcnow() - timedelta(hours=1))
        )
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 401
    # Used a minute ago, but issued more than SESSION_MAX_AGE (7 days) ago: over too.
    fresh = (await login(client, "bob")).json()["token"]
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.kind == "login", api_tokens.c.revoked.is_(False))
            .values(created_at=utcnow() - timedelta(days=8), last_used_at=utcnow() - timedelta(minutes=2))
        )
    assert (await client.get("/v1/me", headers=bearer(fresh))).status_code == 401


async def test_use_slides_the_session_expiry(client, runtime):
    user_id = await make_user(runtime, "carol")
    token = (await login(client, "carol")).json()["token"]
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.user_id == user_id)
            .values(last_used_at=utcnow() - timedelta(hours=11), expires_at=utcnow() + timedelta(hours=1))
        )
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 200
    async with runtime.engine.connect() as conn:
        expires = (await conn.execute(select(api_tokens.c.expires_at).where(api_tokens.c.user_id == user_id))).scalar()
    assert expires > utcnow() + timedelta(hours=11), "using the session pushed its expiry out by SESSION_TTL"


async def test_locking_a_user_revokes_sessions_and_api_tokens_at_once(client, runtime):
    user_id = await make_user(runtime, "dave", "operator")
    session = (await login(client, "dave")).json()["token"]
    api = await create_api_token(runtime.engine, user_id, "ci")
    locked = await client.post(f"/v1/users/{user_id}/lock", headers=admin())
    assert locked.status_code == 200 and locked.json() == {"id": user_id, "locked": True, "tokens_revoked": 2}
    for token in (session, api):
        assert (await client.get("/v1/jobs", headers=bearer(token))).status_code == 401
    assert (await login(client, "dave")).status_code == 401
    unlocked = await client.post(f"/v1/users/{user_id}/unlock", headers=admin())
    assert unlocked.json()["locked"] is False
    assert (await client.get("/v1/jobs", headers=bearer(api))).status_code == 401, "revoked tokens stay revoked"
    assert (await login(client, "dave")).status_code == 200


async def test_runbook_lock_call(client, runtime):
    """LegacyVideo's runbook: POST /api/admin/users/lock {"userId": ..., "locked": true}."""
    user_id = await make_user(runtime, "erin")
    token = (await login(client, "erin")).json()["token"]
    response = await client.post(
        "/api/admin/users/lock",
        headers={**admin(), "Content-Type": "application/json"},
        json={"userId": str(user_id), "locked": True},
    )
    assert response.status_code == 200 and response.json()["locked"] is True
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 401
    by_name = await client.post("/api/admin/users/lock", headers=admin(), json={"userId": "erin", "locked": False})
    assert by_name.status_code == 200 and by_name.json()["locked"] is False
    missing = await client.post("/api/admin/users/lock", headers=admin(), json={"userId": "nobody", "locked": True})
    assert missing.status_code == 404
    bad = await client.post("/api/admin/users/lock", headers=admin(), json={"locked": True})
    assert bad.status_code == 400
    viewer = (await login(client, "erin")).json()["token"]
    assert (await client.post("/api/admin/users/lock", headers=bearer(viewer), json={"userId": 1})).status_code == 403


async def test_api_tokens_are_named_expire_listed_and_revoked(client, runtime):
    await make_user(runtime, "fay", "operator")
    session = (await login(client, "fay")).json()["token"]
    created = await client.post("/v1/tokens", headers=bearer(session), json={"name": "ci", "expires_in": 3600})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "ci" and body["token"].startswith("rh_") and body["expires_at"]
    listed = (await client.get("/v1/tokens", headers=bearer(session))).json()
    names = {(t["name"], t["kind"]) for t in listed}
    assert ("ci", "api") in names and ("login", "login") in names
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert (await client.get("/v1/jobs", headers=bearer(body["token"]))).status_code == 200
    revoked = await client.delete(f"/v1/tokens/{body['id']}", headers=bearer(session))
    assert revoked.status_code == 204
    for path in ("/v1/jobs", "/v1/me", "/v1/tokens", "/v1/assets"):
        assert (await client.get(path, headers=bearer(body["token"]))).status_code == 401, path
    # Someone else's token id is "not found" for a non-admin.
    await make_user(runtime, "gus")
    other = (await login(client, "gus")).json()["token"]
    other_id = (await client.get("/v1/tokens", headers=bearer(other))).json()[0]["id"]
    assert (await client.delete(f"/v1/tokens/{other_id}", headers=bearer(session))).status_code == 404
    assert (await client.delete(f"/v1/tokens/{other_id}", headers=admin())).status_code == 204
    # An expired API token is refused.
    expiring = (
        await client.post("/v1/tokens", headers=bearer(session), json={"name": "short", "expires_in": 60})
    ).json()
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == expiring["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await client.get("/v1/me", headers=bearer(expiring["token"]))).status_code == 401


async def test_user_management_routes(client, runtime):
    created = await client.post(
        "/v1/users", headers=admin(), json={"username": "hal", "password": PASSWORD, "role": "operator"}
    )
    assert created.status_code == 201
    user_id = created.json()["id"]
    assert (
        await client.post("/v1/users", headers=admin(), json={"username": "hal", "password": PASSWORD})
    ).status_code == 409
    bad = await client.post("/v1/users", headers=admin(), json={"username": "../x", "password": PASSWORD})
    assert bad.status_code == 422
    listed = (await client.get("/v1/users", headers=admin())).json()
    assert [u["username"] for u in listed] == ["hal"] and "password_hash" not in listed[0]
    session = (await login(client, "hal")).json()["token"]
    changed = await client.put(
        f"/v1/users/{user_id}/password", headers=admin(), json={"password": "another long password"}
    )
    assert changed.status_code == 200 and changed.json()["sessions_ended"] == 1
    assert (await client.get("/v1/me", headers=bearer(session))).status_code == 401
    assert (await login(client, "hal")).status_code == 401
    mine = (await login(client, "hal", "another long password")).json()["token"]
    own = await client.post(
        "/v1/me/password", headers=bearer(mine), json={"current_password": "wrong one!", "new_password": PASSWORD}
    )
    assert own.status_code == 400
    assert (await client.get(f"/v1/users/{user_id}", headers=admin())).json()["username"] == "hal"
    assert (await client.delete(f"/v1/users/{user_id}", headers=admin())).status_code == 204
    assert (await client.get(f"/v1/users/{user_id}", headers=admin())).status_code == 404
    assert (await client.get("/v1/me", headers=bearer(mine))).status_code == 401


async def test_logins_and_failures_are_audited_with_ids_only(client, runtime):
    user_id = await make_user(runtime, "ivy")
    assert (await login(client, "ivy")).status_code == 200
    assert (await login(client, "ivy", "not the password")).status_code == 401
    assert (await login(client, "nobody-here", "whatever pw")).status_code == 401
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).all()
    logins = [(r.action, r.actor, r.target, r.details) for r in rows if r.action.startswith("auth.login")]
    assert logins == [
        ("auth.login", f"user:{user_id}", f"user:{user_id}", {}),
        ("auth.login.failed", "anonymous", f"user:{user_id}", {"reason": "bad_password"}),
        ("auth.login.failed", "anonymous", None, {"reason": "unknown_user"}),
    ]
    text = repr(rows)
    assert "ivy" not in text and "nobody-here" not in text and "198.51.100.7" not in text


async def test_login_body_errors(client):
    assert (
        await client.post("/auth/login", content=b"{not json", headers={"Content-Type": "application/json"})
    ).status_code == 400
    assert (
        await client.post("/auth/login", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
    ).status_code == 400
    assert (await client.post("/auth/login", json={})).status_code == 401
