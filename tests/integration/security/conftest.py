"""Fixtures for the security tests: the whole app (every domain loaded) on SQLite and
PostgreSQL with nothing configured but the database, the data directory and an ADMIN_TOKEN."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.runtime import Runtime, build_runtime
from reelhouse.core.security.users import create_user

ADMIN_TOKEN = "security-tests-admin-token-0123456789"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(db_url, tmp_path, monkeypatch) -> Settings:
    for name in ("MASTER_ENCRYPTION_KEY", "ENCRYPTION_KEY", "MASTER_ENCRYPTION_KEY_PREVIOUS", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    return Settings()


@pytest.fixture
async def runtime(settings) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    await runtime.aclose()


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime=runtime, background=False)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("198.51.100.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


async def make_user(runtime: Runtime, name: str, role: str = "viewer") -> int:
    return await create_user(runtime.engine, name, PASSWORD, role)


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD, **extra) -> httpx.Response:
    return await client.post("/auth/login", json={"username": name, "password": password, **extra})
