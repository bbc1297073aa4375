"""With LOG_LEVEL=debug through login, API tokens, an OAuth connect against the fake Twitch, an
upload and its encode, the logs hold none of the configured secrets, tokens or hashes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import select

from reelhouse.app import create_app
from reelhouse.archive.tokens import TokenStore
from reelhouse.config import Settings
from reelhouse.core.db.models import users
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from reelhouse.core.security.keys import key_file_path, read_key_file
from reelhouse.core.telemetry.logging import setup_logging
from reelhouse.encode.pipeline import ENCODE_KINDS
from tests import media_fixtures
from tests.fakes.helix import FakeTwitch
from tests.fakes.server import serve

from .conftest import PASSWORD

SECRETS = {
    "ADMIN_TOKEN": "masking-admin-token-7f3a9c1e",
    "TWITCH_CLIENT_SECRET": "twitch-client-secret-5b8d2e",
    "YT_CLIENT_SECRET": "youtube-client-secret-91ac4f",
    "TWITCH_OAUTH_TOKEN": "oauth:chat-token-c0ffee1234",
    "S3_SECRET_ACCESS_KEY": "s3-secret-key-abcdef123456",
}
DB_PASSWORD = "db-password-Zq8xK2"


@pytest.mark.slow
async def test_debug_logs_hold_no_secret_token_or_hash(db_url, tmp_path, monkeypatch, capsys):
    if db_url.startswith("postgresql"):
        db_url = db_url.replace("postgresql+asyncpg://postgres@", f"postgresql+asyncpg://postgres:{DB_PASSWORD}@")
    twitch = FakeTwitch(
        client_secret=SECRETS["TWITCH_CLIENT_SECRET"], redirect_uri="http://testserver/auth/twitch/callback"
    )
    with serve(twitch.app) as fake:
        env = {
            **SECRETS,
            "DATABASE_URL": db_url,
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_LEVEL": "debug",
            "ACCESS_LOG": "true",
            "TWITCH_CLIENT_ID": twitch.client_id,
            "TWITCH_AUTH_BASE": f"{fake.base_url}/oauth2",
            "TWITCH_REDIRECT_URI": twitch.redirect_uri,
            "YT_CLIENT_ID": "yt-client-id",
            "HW_ACCEL": "none",
            "RATE_LIMIT_ENABLED": "false",
            "JOB_POLL_INTERVAL": "0.1",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in ("MASTER_ENCRYPTION_KEY", "ENCRYPTION_KEY"):
            monkeypatch.delenv(name, raising=False)
        settings = Settings()
        setup_logging("debug", "text")
        seen = await _full_flow(settings, twitch, tmp_path)
    logging.getLogger().handlers = []
    out = capsys.readouterr().err
    assert "POST /auth/login 200" in out, "the access log is on"
    assert "SELECT" in out, "the SQL statement log is on at debug"
    forbidden = {**SECRETS, "db password": DB_PASSWORD, **seen}
    leaked = {name: value for name, value in forbidden.items() if value and value in out}
    assert leaked == {}, f"secrets in the logs: {sorted(leaked)}"


async def _full_flow(settings: Settings, twitch: FakeTwitch, tmp_path) -> dict[str, str]:
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime, background=False)
    seen: dict[str, str] = {}
    admin = {"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client,
    ):
        created = await client.post(
            "/v1/users", headers=admin, json={"username": "ops", "password": PASSWORD, "role": "admin"}
        )
        assert created.status_code == 201
        assert (
            await client.post("/auth/login", json={"username": "ops", "password": "wrong password"})
        ).status_code == 401
        session = (await client.post("/auth/login", json={"username": "ops", "password": PASSWORD})).json()["token"]
        api = (
            await client.post("/v1/tokens", headers={"Authorization": f"Bearer {session}"}, json={"name": "ci"})
        ).json()
        seen.update(password=PASSWORD, session=session, api_token=api["token"])
        seen["session hash"] = hashlib.sha256(session.encode()).hexdigest()
        seen["api token hash"] = hashlib.sha256(api["token"].encode()).hexdigest()
        async with runtime.engine.connect() as conn:
            seen["password hash"] = (await conn.execute(select(users.c.password_hash))).scalar_one()
        bearer = {"Authorization": f"Bearer {api['token']}"}
        assert (await client.get("/v1/me", headers=bearer)).status_code == 200

        # OAuth connect against the fake Twitch: start, provider redirect, callback.
        start = await client.post("/auth/twitch/start", headers=admin)
        assert start.status_code == 303, start.text
        state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
        code = twitch.issue_authorization_code()
        done = await client.get("/auth/twitch/callback", params={"state": state, "code": code})
        assert done.status_code == 200, done.text
        stored = await TokenStore.from_settings(runtime.engine, settings).load("twitch")
        seen.update(oauth_access=stored.access_token, oauth_refresh=stored.refresh_token or "", oauth_code=code)

        # Upload and encode.
        clip = media_fixtures.make_clip(tmp_path / "clip.mp4", width=160, height=120, duration=1.0)
        with clip.open("rb") as media:
            job = await client.post(
                "/v1/jobs",
                headers=bearer,
                files={"file": ("clip.mp4", media)},
                data={"profile": "mp4-720p", "preset": "ultrafast"},
            )
        assert job.status_code == 201, job.text
        worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.1, kinds=list(ENCODE_KINDS)))
        running = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(120):
                while (await client.get(f"/v1/jobs/{job.json()['job_id']}", headers=bearer)).json()["status"] not in (
                    "completed",
                    "failed",
                    "dead",
                ):
                    await asyncio.sleep(0.2)
        finally:
            worker.request_stop()
            await running
        assert (await client.get(f"/v1/jobs/{job.json()['job_id']}", headers=bearer)).json()["status"] == "completed"

        # An error whose message and traceback carry secrets, logged at every level.
        log = logging.getLogger("reelhouse.test")
        try:
            raise RuntimeError(f"upstream said token={stored.access_token} with {SECRETS['ADMIN_TOKEN']}")
        except RuntimeError:
            for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
                log.log(level, "failure with %s", SECRETS["TWITCH_CLIENT_SECRET"], exc_info=True)
        seen["master key"] = read_key_file(key_file_path(settings.server.data_dir))[0]
        await runtime.aclose()
    return seen
