"""Fixtures for the vault: the domain set up on SQLite and PostgreSQL, a real SMTP server
(aiosmtpd), an in-loop worker, users with API tokens, and a clip with a plaintext marker."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.db import migrate
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import Runtime, build_runtime
from reelhouse.core.security.users import create_api_token, create_user
from reelhouse.vault.plugin import VaultDomain, setup
from reelhouse.vault.tasks import VAULT_KINDS
from tests.fakes.mailbox import Mailbox

ADMIN_TOKEN = "vault-tests-admin-token-0123456789"
MASTER_KEY = "vault-tests-master-key-0123456789abcdef"
APP_URL = "http://vault.test"
MARKER = "PLAINTEXT-MARKER-7f3a9c1e"
TOKEN = re.compile(r"#token=(rhv_[A-Za-z0-9_-]+)")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


def vault_env(db_url: str, data_dir: Path, box: Mailbox, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "DATA_DIR": str(data_dir),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "MASTER_ENCRYPTION_KEY": MASTER_KEY,
        "FROM_EMAIL": "Vault <vault@example.org>",
        "APP_URL": APP_URL,
        "VAULT_ENABLED": "true",
        "VAULT_MIN_WAITING_PERIOD": "1s",
        "VAULT_WAITING_PERIOD": "2s",
        "VAULT_MIN_CHECKIN_INTERVAL": "1s",
        "VAULT_VETO_REMINDER_INTERVAL": "1h",
        "VAULT_SEGMENT_BYTES": "65536",
        "HW_ACCEL": "none",
        "JOB_POLL_INTERVAL": "0.1",
        "JOB_LEASE_SECONDS": "10",
        "WORKER_SHUTDOWN_GRACE": "2",
        "RATE_LIMIT_ENABLED": "false",
        "STORAGE_BACKEND": "fs",
        **box.env(),
        **extra,
    }


@pytest.fixture
def env(db_url: str, tmp_path: Path, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = vault_env(db_url, tmp_path / "data", mailbox)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings, load_domains=False)
    domain = setup(runtime)
    assert domain is not None
    runtime.vault = domain  # type: ignore[attr-defined]
    await migrate.run_migrations(runtime.engine)
    yield runtime
    await domain.services.aclose()
    await runtime.aclose()


@pytest.fixture
def domain(runtime: Runtime) -> VaultDomain:
    return runtime.vault  # type: ignore[attr-defined]


@pytest.fixture
async def client(runtime: Runtime, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime=runtime, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
        yield client


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    instance = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(
            worker_id="vault-test-worker",
            concurrency=2,
            poll_interval=0.1,
            progress_interval=0.5,
            kinds=list(VAULT_KINDS),
            shutdown_grace=2,
        ),
    )
    run = asyncio.create_task(instance.run())
    yield instance
    instance.request_stop()
    await asyncio.wait_for(run, 30)


@dataclass
class User:
    id: int
    name: str
    headers: dict[str, str]


async def make_user(runtime: Runtime, name: str, role: str = "viewer") -> User:
    user_id = await create_user(runtime.engine, name, "correct horse battery staple", role)
    token = await create_api_token(runtime.engine, user_id, "tests")
    return User(user_id, name, {"Authorization": f"Bearer {token}"})


def link_token(mail: Any) -> str:
    match = TOKEN.search(mail.text)
    assert match, f"no link token in {mail.subject!r}"
    assert match.group(1) in mail.html  # the HTML part carries the same link
    return match.group(1)


def token_header(token: str) -> dict[str, str]:
    return {"X-Vault-Token": token}


@pytest.fixture(scope="session")
def clip_30s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 320x240 video with a tone, the marker in its metadata, moov at the end (not
    faststart: the transcoder must seek in the decrypted source)."""
    path = tmp_path_factory.mktemp("vault-clips") / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=30",
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-metadata", f"title={MARKER}", "-metadata", f"comment={MARKER}",
            str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


async def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
