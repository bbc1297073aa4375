"""OAuth connect flows against the wire-level fakes of id.twitch.tv and Google's token endpoint.

The browser leg (the user approving at the provider) is simulated by asking the fake for an
authorization code, as the provider would put it on the redirect to our callback.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select, update

from reelhouse.archive.models import oauth_tokens
from reelhouse.archive.tokens import TokenStore
from reelhouse.config import Settings
from reelhouse.core.db.models import kv
from reelhouse.core.db.types import utcnow
from tests.fakes.helix import FakeTwitch
from tests.fakes.server import ServedApp, serve
from tests.fakes.youtube import FakeYouTube
from tests.integration.archive_api.conftest import admin


# One pair of fake servers for the module (starting uvicorn per test dominated the run time);
# tests compare the fakes' call logs before and after rather than from zero.
@pytest.fixture(scope="module")
def fake_twitch() -> FakeTwitch:
    return FakeTwitch(redirect_uri="https://reelhouse.example/auth/twitch/callback")


@pytest.fixture(scope="module")
def fake_youtube(tmp_path_factory) -> FakeYouTube:
    return FakeYouTube(
        storage_dir=tmp_path_factory.mktemp("yt"), redirect_uri="https://reelhouse.example/auth/youtube/callback"
    )


@pytest.fixture(scope="module")
def twitch_server(fake_twitch) -> Iterator[ServedApp]:
    with serve(fake_twitch.app) as served:
        yield served


@pytest.fixture(scope="module")
def youtube_server(fake_youtube) -> Iterator[ServedApp]:
    with serve(fake_youtube.app) as served:
        yield served


@pytest.fixture
def settings(archive_env, monkeypatch, fake_twitch, fake_youtube, twitch_server, youtube_server) -> Settings:
    values = {
        "TWITCH_CLIENT_ID": fake_twitch.client_id,
        "TWITCH_CLIENT_SECRET": fake_twitch.client_secret,
        "TWITCH_AUTH_BASE": f"{twitch_server.base_url}/oauth2",
        "TWITCH_REDIRECT_URI": fake_twitch.redirect_uri,
        "TWITCH_SCOPES": "chat:read,chat:edit",
        "YT_CLIENT_ID": fake_youtube.client_id,
        "YT_CLIENT_SECRET": fake_youtube.client_secret,
        "YOUTUBE_OAUTH_BASE": youtube_server.base_url,
        "YT_REDIRECT_URI": fake_youtube.redirect_uri,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings()


async def _start(client, provider: str) -> tuple[str, str]:
    """Start a connect as the admin; returns (state, binding cookie)."""
    page = await client.get(f"/auth/{provider}/start", headers=admin())  # what a browser opens: no state
    assert page.status_code == 200 and f'action="/auth/{provider}/start"' in page.text
    assert "set-cookie" not in page.headers
    response = await client.post(f"/auth/{provider}/start", headers=admin())
    assert response.status_code == 303
    query = parse_qs(urlparse(response.headers["location"]).query)
    cookie = response.cookies.get(f"rh_oauth_{provider}")
    assert cookie and "httponly" in response.headers["set-cookie"].lower()
    return query["state"][0], cookie


async def _callback(client, provider: str, state: str, code: str, cookie: str | None):
    client.cookies.clear()
    cookies = {f"rh_oauth_{provider}": cookie} if cookie else {}
    return await client.get(
        f"/auth/{provider}/callback",
        params={"state": state, "code": code},
        headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
    )


async def test_twitch_connect_stores_encrypted_tokens_and_returns_no_secrets(client, engine, runtime, fake_twitch):
    response = await client.post("/auth/twitch/start", headers=admin())
    location = urlparse(response.headers["location"])
    query = parse_qs(location.query)
    assert location.path.endswith("/oauth2/authorize") and query["client_id"] == [fake_twitch.client_id]
    assert query["redirect_uri"] == [fake_twitch.redirect_uri] and query["scope"] == ["chat:read chat:edit"]
    state, cookie = query["state"][0], response.cookies["rh_oauth_twitch"]
    calls_before = len(fake_twitch.token_requests)
    code = fake_twitch.issue_authorization_code()
    done = await _callback(client, "twitch", state, code, cookie)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "ok" and body["scopes"] == ["chat:read", "chat:edit"] and 0 < body["expires_in"] <= 3600
    stored = await TokenStore.from_settings(engine, runtime.settings).load("twitch")
    assert stored is not None and stored.refresh_token
    assert stored.access_token not in done.text and stored.refresh_token not in done.text
    async with engine.connect() as conn:
        row = (await conn.execute(select(oauth_tokens).where(oauth_tokens.c.provider == "twitch"))).one()
    assert row.encryption_version == 2 and stored.access_token not in row.access_token  # encrypted at rest
    assert fake_twitch.token_requests[calls_before:] == ["authorization_code"]


async def test_state_is_single_use_bound_to_the_browser_and_expiring(client, engine, fake_twitch):
    state, cookie = await _start(client, "twitch")
    wrong_browser = await _callback(client, "twitch", state, fake_twitch.issue_authorization_code(), "other-cookie")
    assert wrong_browser.status_code == 400 and "browser" in wrong_browser.json()["error"]
    # The failed attempt spent the state: even the right browser must start again.
    reused = await _callback(client, "twitch", state, fake_twitch.issue_authorization_code(), cookie)
    assert reused.status_code == 400 and "already used" in reused.json()["error"]

    state, cookie = await _start(client, "twitch")
    assert (await _callback(client, "twitch", state, fake_twitch.issue_authorization_code(), cookie)).status_code == 200
    replay = await _callback(client, "twitch", state, fake_twitch.issue_authorization_code(), cookie)
    assert replay.status_code == 400 and "already used" in replay.json()["error"]

    state, cookie = await _start(client, "twitch")
    async with engine.begin() as conn:  # age the stored state past its TTL
        stale = (utcnow() - timedelta(minutes=1)).isoformat()
        rows = (await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.key.like("oauth_state:twitch:%")))).all()
        for key, value in rows:
            await conn.execute(
                update(kv)
                .where(kv.c.key == key)
                .values(value=value.replace(value.split('"expires_at": "')[1].split('"')[0], stale))
            )
    expired = await _callback(client, "twitch", state, fake_twitch.issue_authorization_code(), cookie)
    assert expired.status_code == 400 and "expired" in expired.json()["error"]

    missing = await client.get("/auth/twitch/callback", params={"code": "x"})
    assert missing.status_code == 400 and "state" in missing.json()["error"]
    forged = await _callback(client, "twitch", "made-up-state", "x", cookie)
    assert forged.status_code == 400


async def test_bad_code_and_declined_consent_are_400(client, fake_twitch):
    state, cookie = await _start(client, "twitch")
    bad_code = await _callback(client, "twitch", state, "not-a-code", cookie)
    assert bad_code.status_code == 400 and "Invalid authorization code" in bad_code.json()["error"]
    state, cookie = await _start(client, "twitch")
    client.cookies.clear()
    declined = await client.get(
        "/auth/twitch/callback",
        params={"state": state, "error": "access_denied", "error_description": "The user denied"},
        headers={"Cookie": f"rh_oauth_twitch={cookie}"},
    )
    assert declined.status_code == 400 and "denied" in declined.json()["error"]


async def test_only_admins_start_a_connect(client, role_headers):
    for provider in ("twitch", "youtube"):
        assert (await client.get(f"/auth/{provider}/start")).status_code == 401
        operator = await client.get(f"/auth/{provider}/start", headers=role_headers["operator"])
        assert operator.status_code == 403
        refresh = await client.post(f"/auth/{provider}/refresh")
        assert refresh.status_code == 401


async def test_start_as_json_for_api_clients(client):
    response = await client.post("/auth/twitch/start", headers={**admin(), "Accept": "application/json"})
    assert response.status_code == 200
    assert response.json()["authorize_url"].startswith("http") and response.json()["expires_in"] == 600
    assert "rh_oauth_twitch" in response.cookies


async def test_twitch_refresh_rotates_the_stored_token(client, engine, runtime, fake_twitch):
    none_yet = await client.post("/auth/twitch/refresh", headers=admin())
    assert none_yet.status_code == 409 and "/auth/twitch/start" in none_yet.json()["error"]
    state, cookie = await _start(client, "twitch")
    await _callback(client, "twitch", state, fake_twitch.issue_authorization_code(), cookie)
    store = TokenStore.from_settings(engine, runtime.settings)
    before = await store.load("twitch")
    calls_before = len(fake_twitch.token_requests)
    response = await client.post("/auth/twitch/refresh", headers=admin())
    assert response.status_code == 200, response.text
    after = await store.load("twitch")
    assert after.access_token != before.access_token and after.refresh_token != before.refresh_token
    assert response.json()["status"] == "ok" and after.access_token not in response.text
    assert fake_twitch.token_requests[calls_before:] == ["refresh_token"]


async def test_youtube_connect_and_refresh(client, engine, runtime, fake_youtube):
    response = await client.post("/auth/youtube/start", headers=admin())
    query = parse_qs(urlparse(response.headers["location"]).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    state, cookie = query["state"][0], response.cookies["rh_oauth_youtube"]
    done = await _callback(client, "youtube", state, fake_youtube.issue_authorization_code(), cookie)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "ok" and body["access_token_present"] is True and body["refresh_token_present"] is True
    assert body["expiry"].endswith("Z")
    stored = await TokenStore.from_settings(engine, runtime.settings).load("youtube")
    assert stored.access_token.startswith("ya29.") and stored.access_token not in done.text
    refreshes_before = fake_youtube.refresh_count
    refreshed = await client.post("/auth/youtube/refresh", headers=admin())
    assert refreshed.status_code == 200 and fake_youtube.refresh_count == refreshes_before + 1
    # A revoked refresh token is the operator's problem to fix: 400 with Google's reason.
    fake_youtube.revoke_refresh_tokens()
    revoked = await client.post("/auth/youtube/refresh", headers=admin())
    assert revoked.status_code == 400 and "youtube" in revoked.json()["error"]
    # A state issued for one provider does not complete the other.
    state, cookie = await _start(client, "youtube")
    crossed = await _callback(client, "twitch", state, "x", cookie)
    assert crossed.status_code == 400


async def test_missing_client_configuration_is_400(client, runtime, monkeypatch):
    from reelhouse.archive.settings import archive_settings

    archive_settings(runtime.settings).twitch_client_id = ""
    response = await client.post("/auth/twitch/start", headers=admin())
    assert response.status_code == 400 and "TWITCH_CLIENT_ID" in response.json()["error"]


async def test_a_browser_is_asked_for_basic_credentials_and_can_connect(client, engine, fake_twitch):
    import base64

    from reelhouse.core.db.models import users
    from reelhouse.core.security.passwords import hash_password

    challenge = await client.get("/auth/twitch/start")
    assert challenge.status_code == 401 and challenge.headers["www-authenticate"].startswith("Basic")
    async with engine.begin() as conn:
        await conn.execute(
            users.insert().values(
                username="boss", password_hash=hash_password("correct horse battery"), role="admin", created_at=utcnow()
            )
        )
    basic = {"Authorization": "Basic " + base64.b64encode(b"boss:correct horse battery").decode()}
    started = await client.post("/auth/twitch/start", headers=basic)
    assert started.status_code == 303
    state = parse_qs(urlparse(started.headers["location"]).query)["state"][0]
    # The same browser (cookie jar) follows the provider's redirect back.
    done = await client.get(
        "/auth/twitch/callback", params={"state": state, "code": fake_twitch.issue_authorization_code()}
    )
    assert done.status_code == 200, done.text
    assert "rh_oauth_twitch" not in client.cookies  # spent: the callback clears it
