"""Fixtures for the archive API tests: an app with the archive's pipeline and API registered,
on SQLite and PostgreSQL, plus helpers to seed VODs and callers of each role."""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[3])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


from reelhouse.app import create_app  # noqa: E402
from reelhouse.archive.models import vods  # noqa: E402
from reelhouse.archive.plugin import setup  # noqa: E402
from reelhouse.config import Settings  # noqa: E402
from reelhouse.core.db.models import users  # noqa: E402
from reelhouse.core.db.types import utcnow  # noqa: E402
from reelhouse.core.runtime import build_runtime  # noqa: E402
from reelhouse.core.security.passwords import hash_password  # noqa: E402
from reelhouse.core.security.users import create_api_token  # noqa: E402

ADMIN_TOKEN = "archive-api-admin-token-0123456789"
MASTER_KEY = base64.b64encode(b"m" * 32).decode()
# Variables a developer's shell might carry that would change what the tests expect.
_ARCHIVE_ENV = (
    "TWITCH_CHANNEL",
    "TWITCH_CHANNELS",
    "TWITCH_CLIENT_ID",
    "TWITCH_CLIENT_SECRET",
    "TWITCH_AUTH_BASE",
    "TWITCH_REDIRECT_URI",
    "TWITCH_SCOPES",
    "YT_CLIENT_ID",
    "YT_CLIENT_SECRET",
    "YT_REDIRECT_URI",
    "YT_SCOPES",
    "YOUTUBE_OAUTH_BASE",
    "PUBLIC_BASE_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "VOD_PROCESS_INTERVAL",
    "DOWNLOAD_MAX_ATTEMPTS",
    "RETENTION_KEEP_DAYS",
    "RETENTION_DRY_RUN",
    "PROCESSING_RETRY_COOLDOWN",
    "MASTER_ENCRYPTION_KEY",
    "ENCRYPTION_KEY",
)


@pytest.fixture
def archive_env(db_url, tmp_path, monkeypatch) -> dict[str, str]:
    """The environment every archive API test starts from; tests add to it before `settings`."""
    for name in _ARCHIVE_ENV:
        monkeypatch.delenv(name, raising=False)
    values = {
        "DATABASE_URL": db_url,
        "DATA_DIR": str(tmp_path / "data"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "TWITCH_CHANNEL": "alpha",
        "MASTER_ENCRYPTION_KEY": MASTER_KEY,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(archive_env) -> Settings:
    return Settings()


@pytest.fixture
async def runtime(settings):
    # Registered by hand rather than through the entry point, so the test sees exactly the
    # archive's pipeline and API, each once.
    runtime = build_runtime(settings, load_domains=False)
    setup(runtime)
    yield runtime
    await runtime.aclose()


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime=runtime, background=False)


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def engine(runtime):
    return runtime.engine


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


_PASSWORD_HASH: list[str] = []


@pytest.fixture
async def role_headers(engine) -> dict[str, dict[str, str]]:
    """Bearer headers for a viewer and an operator (admin uses ADMIN_TOKEN). The users are
    inserted with one argon2 hash computed per session: these tests authenticate by token."""
    if not _PASSWORD_HASH:
        _PASSWORD_HASH.append(hash_password("correct horse battery"))
    headers = {}
    for role in ("viewer", "operator"):
        async with engine.begin() as conn:
            user_id = (
                await conn.execute(
                    users.insert()
                    .values(
                        username=f"{role}-user",
                        password_hash=_PASSWORD_HASH[0],
                        role=role,
                        created_at=utcnow(),
                    )
                    .returning(users.c.id)
                )
            ).scalar_one()
        headers[role] = {"Authorization": f"Bearer {await create_api_token(engine, user_id, 't')}"}
    headers["admin"] = admin()
    return headers


BASE_DATE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def add_vod(
    engine, twitch_vod_id: str, *, channel: str = "alpha", date: datetime | None = None, **values: Any
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            vods.insert().values(
                twitch_vod_id=twitch_vod_id,
                channel=channel,
                title=values.pop("title", f"Stream {twitch_vod_id}"),
                date=date or BASE_DATE,
                created_at=values.pop("created_at", now),
                updated_at=now,
                **values,
            )
        )


def days(n: float) -> timedelta:
    return timedelta(days=n)
