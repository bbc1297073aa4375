"""The vault on S3 (SeaweedFS): upload, transcode and ranged playback through the S3 backend,
and a scan of every object in the bucket for the clip's plaintext marker."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.db import migrate
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from reelhouse.vault.plugin import setup
from reelhouse.vault.tasks import VAULT_KINDS
from tests.integration.encode.conftest import seaweed  # noqa: F401 - the SeaweedFS fixture

from .conftest import MARKER, make_user, wait_until


@pytest.fixture
def marked_clip(tmp_path: Path) -> Path:
    path = tmp_path / "marked.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-metadata", f"title={MARKER}", str(path)],
        check=True,
    )  # fmt: skip
    return path


async def test_s3_holds_only_ciphertext_and_plays_ranges(seaweed, env, monkeypatch, marked_clip: Path) -> None:  # noqa: F811
    bucket = seaweed.new_bucket()
    for name, value in {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT": seaweed.endpoint,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": seaweed.access_key,
        "S3_SECRET_ACCESS_KEY": seaweed.secret_key,
        "S3_MULTIPART_CHUNK_MB": "5",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    domain = setup(runtime)
    assert domain is not None
    await migrate.run_migrations(runtime.engine)
    app = create_app(settings, runtime=runtime, background=False)
    worker = Worker(
        runtime.engine, runtime.registry, WorkerOptions(worker_id="s3", poll_interval=0.1, kinds=list(VAULT_KINDS))
    )
    running = asyncio.create_task(worker.run())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            owner = await make_user(runtime, "s3owner")
            body = {"title": "S3", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "s@example.org"}
            plan = (await client.post("/api/plans", json=body, headers=owner.headers)).json()
            message = (
                await client.post("/api/messages", json={"planId": plan["id"], "title": "m"}, headers=owner.headers)
            ).json()
            headers = {**owner.headers, "Content-Type": "video/mp4"}
            upload = await client.post(
                f"/api/uploads/{message['id']}", content=marked_clip.read_bytes(), headers=headers
            )
            assert upload.status_code == 202

            async def ready():
                got = (await client.get(f"/api/messages/{message['id']}", headers=owner.headers)).json()
                assert got["status"] != "failed", got
                return got if got["status"] == "ready" else None

            await wait_until(ready, 90, "the transcode on S3")
            url = f"/api/messages/{message['id']}/media"
            whole = (await client.get(url, headers=owner.headers)).content
            assert MARKER.encode() in whole
            part = await client.get(url, headers={**owner.headers, "Range": f"bytes={len(whole) - 5000}-"})
            assert part.status_code == 206 and part.content == whole[-5000:]
        s3 = seaweed.admin_client()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys and all(k.startswith("vault/") for k in keys)
        for key in keys:
            assert MARKER.encode() not in s3.get_object(Bucket=bucket, Key=key)["Body"].read(), key
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 30)
        await domain.services.aclose()
        await runtime.aclose()
        seaweed.drop_bucket(bucket)
