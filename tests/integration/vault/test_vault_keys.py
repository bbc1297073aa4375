"""Key versions and rotation: `reelhouse vault rotate-key` re-wraps every data key under the new
master key without touching the media; afterwards everything plays with the new key alone,
and the old key alone (the wrong version now) cannot decrypt."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.runtime import build_runtime
from reelhouse.vault.plugin import setup
from tests.media_fixtures import make_clip

from .conftest import MASTER_KEY, make_user, wait_until

NEW_KEY = "vault-tests-rotated-master-key-fedcba9876543210"


@contextlib.asynccontextmanager
async def api_with_keys(
    monkeypatch: pytest.MonkeyPatch, primary: str, previous: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("MASTER_ENCRYPTION_KEY", primary)
    monkeypatch.setenv("MASTER_ENCRYPTION_KEY_PREVIOUS", previous)
    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    domain = setup(runtime)
    assert domain is not None
    app = create_app(settings, runtime=runtime, background=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client
    await domain.services.aclose()
    await runtime.aclose()


def stored_digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.rhs")}


async def test_rotate_key_rewraps_without_reencrypting_and_old_key_alone_fails(
    client, runtime, domain, worker, settings, env, monkeypatch, tmp_path
) -> None:
    owner = await make_user(runtime, "keeper")
    body = {"title": "Keys", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "k@example.org"}
    plan = (await client.post("/api/plans", json=body, headers=owner.headers)).json()
    message = (
        await client.post("/api/messages", json={"planId": plan["id"], "title": "m"}, headers=owner.headers)
    ).json()
    clip = make_clip(tmp_path / "short.mp4", duration=2.0)
    headers = {**owner.headers, "Content-Type": "video/mp4"}
    assert (
        await client.post(f"/api/uploads/{message['id']}", content=clip.read_bytes(), headers=headers)
    ).status_code == 202

    async def ready():
        got = (await client.get(f"/api/messages/{message['id']}", headers=owner.headers)).json()
        return got if got["status"] == "ready" else None

    old_key_id = (await wait_until(ready, 60, "the transcode"))["key_id"]
    url = f"/api/messages/{message['id']}/media"
    original = await client.get(url, headers=owner.headers)
    assert original.status_code == 200
    before = stored_digests(settings.server.data_dir)
    assert len(before) == 1

    async with api_with_keys(monkeypatch, NEW_KEY, MASTER_KEY) as rotated:  # the old key kept as previous
        assert (await rotated.get(url, headers=owner.headers)).content == original.content

    rotate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reelhouse.cli", "vault", "rotate-key"],
        capture_output=True,
        text=True,
        env={**os.environ, "MASTER_ENCRYPTION_KEY": NEW_KEY, "MASTER_ENCRYPTION_KEY_PREVIOUS": MASTER_KEY},
    )
    assert rotate.returncode == 0, rotate.stderr
    report = json.loads(rotate.stdout)
    assert report["rewrapped"] == 1 and report["left"] == 0 and report["primary_key_id"] != old_key_id
    assert stored_digests(settings.server.data_dir) == before  # media untouched: only the wrapped key changed

    async with api_with_keys(monkeypatch, NEW_KEY) as new_only:
        assert (await new_only.get(url, headers=owner.headers)).content == original.content
        listed = (await new_only.get(f"/api/messages/{message['id']}", headers=owner.headers)).json()
        assert listed["key_id"] == report["primary_key_id"]
    async with api_with_keys(monkeypatch, MASTER_KEY) as old_only:
        refused = await old_only.get(url, headers=owner.headers)
        assert refused.status_code == 503 and refused.json()["code"] == "KEY_UNAVAILABLE"
        assert report["primary_key_id"] in refused.json()["error"]
