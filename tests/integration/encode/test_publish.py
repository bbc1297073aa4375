"""Publishing a finished encode through the publisher plugins, each publish its own job with the
engine's retries: YouTube (core's resumable uploader, against the wire-level fake), S3 copy
(SeaweedFS) and the generic webhook. The caller's access token is never stored in plaintext."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.storage.s3 import S3Storage
from reelhouse.encode.publish import KIND_PUBLISH
from tests.fakes.server import serve
from tests.fakes.youtube import FakeYouTube
from tests.integration.encode.conftest import wait_for_job


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISH_BACKOFF_BASE", "0.2")


@pytest.fixture
async def encoded(client, domain, encode_worker, clip_480p) -> dict[str, Any]:
    await domain.service.storage().put("inputs/480p.mp4", clip_480p)
    created = await client.post(
        "/v1/jobs", json={"source_key": "inputs/480p.mp4", "preset": "ultrafast", "profile": "mp4-720p"}
    )
    job = await wait_for_job(client, created.json()["job_id"])
    assert job["status"] == "completed", job
    asset = (await client.get(f"/v1/jobs/{job['id']}/outputs")).json()
    local = domain.service.storage().local_path(asset["master_key"])  # the fs backend here
    return {"id": job["id"], "sha256": hashlib.sha256(local.read_bytes()).hexdigest(), "size": local.stat().st_size}


@pytest.fixture
async def publish_worker(runtime) -> Any:
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05, kinds=[KIND_PUBLISH]))
    run = asyncio.create_task(worker.run())
    yield worker
    worker.request_stop()
    await asyncio.wait_for(run, 30)


async def _publish(client, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(f"/v1/jobs/{job_id}/publish", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True
    done = await wait_for_job(client, int(answer.json()["publish_job_id"]))
    assert body["access_token"] not in json.dumps(done)  # encrypted in the payload
    return done


@pytest.fixture
def youtube() -> Iterator[tuple[FakeYouTube, str]]:
    fake = FakeYouTube()
    with serve(fake.app) as served:
        yield fake, served.base_url


async def youtube_publishes(client, encoded, youtube):
    fake, base = youtube
    token = httpx.post(
        f"{base}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": fake.add_refresh_token(),
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
        },
    ).json()["access_token"]
    configured = await client.put("/v1/plugins/publisher-youtube", json={"config": {"api_base": base}})
    assert configured.json() == {"status": "updated"}
    done = await _publish(
        client, encoded["id"], {"platform": "youtube", "access_token": token, "title": "Published by reelhouse"}
    )
    assert done["status"] == "completed", done
    result = done["tasks"][0]["result"]
    (session,) = fake.sessions_for_title("Published by reelhouse")
    assert result["platform_id"] == session.video_id and result["platform_url"].endswith(session.video_id)
    assert fake.content_sha256(session.upload_id) == encoded["sha256"]


async def s3_copy_publishes(client, encoded, seaweed):
    bucket = seaweed.new_bucket()
    try:
        config = {"bucket": bucket, "endpoint_url": seaweed.endpoint, "access_key_id": seaweed.access_key}
        await client.put("/v1/plugins/publisher-s3", json={"config": config})
        done = await _publish(client, encoded["id"], {"platform": "s3", "access_token": seaweed.secret_key})
        assert done["status"] == "completed", done
        key = done["tasks"][0]["result"]["platform_id"]
        target = S3Storage(
            bucket=bucket,
            endpoint_url=seaweed.endpoint,
            access_key_id=seaweed.access_key,
            secret_access_key=seaweed.secret_key,
        )
        try:
            assert (await target.stat(key)).size == encoded["size"]
        finally:
            await target.aclose()
    finally:
        seaweed.drop_bucket(bucket)


class FlakyReceiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                ok = len(receiver.requests) > 1
                payload = json.dumps({"id": "remote-7", "url": "https://example.com/v/7"}).encode() if ok else b""
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/publish"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def webhook_publishes_after_a_retry(client, encoded):
    receiver = FlakyReceiver()
    try:
        await client.put("/v1/plugins/publisher-webhook", json={"config": {"url": receiver.url}})
        body = {"platform": "webhook", "access_token": "receiver-token-1", "title": "t", "description": "d"}
        answer = await client.post(f"/v1/jobs/{encoded['id']}/publish", json=body)
        # The first attempt meets a 503; the engine retries the task after its backoff.
        done = await wait_for_job(client, int(answer.json()["publish_job_id"]), timeout=90)
        assert done["status"] == "completed", done
        (task,) = done["tasks"]
        assert task["attempts"] == 2 and task["result"]["platform_id"] == "remote-7"
        sent = receiver.requests[-1]
        assert sent["auth"] == "Bearer receiver-token-1" and sent["body"]["sha256"] == encoded["sha256"]
        assert sent["body"]["file_url"].startswith("/media/signed/")
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


async def refusals(client, encoded):
    job_id = encoded["id"]
    assert (await client.post(f"/v1/jobs/{job_id}/publish", json={"platform": "youtube"})).status_code == 422
    unknown = await client.post(f"/v1/jobs/{job_id}/publish", json={"platform": "kick", "access_token": "x"})
    assert unknown.status_code == 400 and "publisher-kick" in unknown.text
    await client.post("/v1/plugins/publisher-webhook/disable")
    off = await client.post(f"/v1/jobs/{job_id}/publish", json={"platform": "webhook", "access_token": "x"})
    assert off.status_code == 400 and "disabled" in off.text
    queued = await client.post("/v1/jobs", json={"source_url": "http://127.0.0.1:9/x.mp4"})
    early = await client.post(
        f"/v1/jobs/{queued.json()['id']}/publish", json={"platform": "youtube", "access_token": "x"}
    )
    assert early.status_code == 400 and "not completed" in early.text


async def test_publishers_each_publish_as_their_own_retried_job(client, encoded, publish_worker, youtube, seaweed):
    """One encode, then every publisher (a test each would encode four times)."""
    await youtube_publishes(client, encoded, youtube)
    await s3_copy_publishes(client, encoded, seaweed)
    await webhook_publishes_after_a_retry(client, encoded)
    await refusals(client, encoded)
