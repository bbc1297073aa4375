from __future__ import annotations

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.runtime import build_runtime

ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def settings(db_url, tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("RATE_LIMIT_REQUESTS_PER_IP", "5")
    return Settings()


@pytest.fixture
async def runtime(settings):
    runtime = build_runtime(settings)
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


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
