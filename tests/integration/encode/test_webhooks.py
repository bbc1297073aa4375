"""Webhooks: signed, replay-safe deliveries retried with backoff, a per-webhook delivery log,
disabling after repeated failures with the reason shown, test-send, secrets never returned.

Events come from a real job (submitted, then cancelled: job.created, job.cancelled) found by the
event feed's database poll; deliveries run as engine tasks on a real worker, to a real HTTP
receiver on loopback."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.encode.events import EventFeed
from reelhouse.encode.services import EncodeServices
from reelhouse.encode.webhooks import KIND_DELIVER, verify_signature

SECRET = "receiver-shared-secret-5f1e0c"
DISABLE_AFTER = 4


@pytest.fixture(autouse=True)
def fast_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", "0.05")
    monkeypatch.setenv("WEBHOOK_BACKOFF_CAP", "0.2")
    monkeypatch.setenv("WEBHOOK_DISABLE_AFTER", str(DISABLE_AFTER))
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "10")


class Receiver:
    """Answers 500 to the first `fail_first` requests (all of them with -1), then 204."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    n = len(receiver.requests)
                    ok = receiver.fail_first >= 0 and n >= receiver.fail_first
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "ok": ok})
                self.send_response(204 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(request.param)
    yield server
    server.close()


async def _job_events(client: Any, services: EncodeServices) -> int:
    """Submit a job and cancel it (no worker runs encodes here); the feed records both changes."""
    created = await client.post("/v1/jobs", json={"source_url": "https://example.com/v.mp4"})
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    assert _jobs(await services.events.poll()) == ["job.created"]
    assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code in (200, 202)
    assert _jobs(await services.events.poll()) == ["job.cancelled"]
    # Another API node polling the same database records nothing twice, yet its own SSE
    # subscribers hear of the change.
    other = EventFeed(services.engine, stale_after=services.events.stale_after)
    async with other.subscribe() as heard:
        assert await other.poll() == []
        told = heard.get_nowait()
    assert (told["event_type"], told["job_id"], told["status"]) == ("job.cancelled", str(job_id), "cancelled")
    return job_id


def _jobs(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events if e["event_type"].startswith("job.")]


async def _until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.fixture
async def delivery_worker(runtime: Any) -> Any:
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05, kinds=[KIND_DELIVER]))
    run = asyncio.create_task(worker.run())
    yield worker
    worker.request_stop()
    await asyncio.wait_for(run, 30)


@pytest.mark.parametrize("receiver", [3], indirect=True)
async def test_a_receiver_that_fails_three_times_gets_each_event_once_signed(
    client, runtime, receiver, delivery_worker
):
    services = runtime.component(EncodeServices)
    made = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "secret": SECRET, "events": ["job.created", "job.cancelled"]}
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    assert "secret" not in hook and SECRET not in made.text and hook["has_secret"] is True
    job_id = await _job_events(client, services)

    async def both_delivered() -> bool:
        return sum(r["ok"] for r in receiver.requests) >= 2

    await _until(both_delivered)
    await asyncio.sleep(1.0)  # nothing more may arrive: no duplicates after the successes
    assert [r["ok"] for r in receiver.requests].count(False) == 3 and len(receiver.requests) == 5
    delivered = [json.loads(r["body"]) for r in receiver.requests if r["ok"]]
    assert sorted(d["event"] for d in delivered) == ["job.cancelled", "job.created"]
    assert len({d["event_id"] for d in delivered}) == 2
    assert all(d["data"]["job_id"] == str(job_id) for d in delivered)
    for r in receiver.requests:
        h = {k.lower(): v for k, v in r["headers"].items()}
        assert verify_signature(SECRET, h["x-webhook-timestamp"], r["body"], h["x-webhook-signature"])
        assert not verify_signature("wrong", h["x-webhook-timestamp"], r["body"], h["x-webhook-signature"])
        # A replay later than the tolerance is refused by the same check.
        assert not verify_signature(
            SECRET, h["x-webhook-timestamp"], r["body"], h["x-webhook-signature"], now=time.time() + 3600
        )
    # Per event: failed attempts, then exactly one success, all under the same event id (retries
    # carry it, so a receiver dedupes on it); the delivery log numbers the attempts.
    log = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()
    for event_id in {d["event_id"] for d in delivered}:
        oks = [r["ok"] for r in receiver.requests if json.loads(r["body"])["event_id"] == event_id]
        assert oks[-1] is True and oks.count(True) == 1
        attempts = sorted((d["attempt"], d["succeeded"]) for d in log if d["event_id"] == event_id)
        assert attempts == [(i + 1, ok) for i, ok in enumerate(oks)]
    now = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert now["is_active"] is True and now["failure_count"] == 0 and now["last_triggered_at"]
    listed = await client.get("/v1/webhooks")
    assert SECRET not in listed.text and all("secret" not in w for w in listed.json())

    tested = await client.post(f"/v1/webhooks/{hook['id']}/test")
    assert tested.json() == {"succeeded": True, "status_code": 204, "error": None}
    assert json.loads(receiver.requests[-1]["body"])["event"] == "webhook.test"


@pytest.mark.parametrize("receiver", [-1], indirect=True)
async def test_a_receiver_that_always_fails_is_disabled_with_a_reason(client, runtime, receiver, delivery_worker):
    services = runtime.component(EncodeServices)
    hook = (await client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.created"]})).json()
    await _job_events(client, services)

    async def disabled() -> bool:
        return not (await client.get(f"/v1/webhooks/{hook['id']}")).json()["is_active"]

    await _until(disabled)
    view = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert view["failure_count"] == DISABLE_AFTER
    assert f"disabled after {DISABLE_AFTER} consecutive failed deliveries" in view["disabled_reason"]
    assert "HTTP 500" in view["disabled_reason"]
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == DISABLE_AFTER  # nothing is sent to a disabled webhook
    # job.cancelled is not subscribed: only job.created was ever sent.
    assert {json.loads(r["body"])["event"] for r in receiver.requests} == {"job.created"}
    scraped = (await client.get("/metrics")).text
    failed = [line for line in scraped.splitlines() if line.startswith('webencode_errors_total{source="webhook"}')]
    assert failed and float(failed[0].split()[-1]) >= DISABLE_AFTER

    # Nothing is lost by pruning recent history; old events and delivery rows go.
    assert await services.events.prune() == 0
    assert len((await client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()) == DISABLE_AFTER
    assert await services.events.prune(keep=timedelta(0)) >= 2
    assert (await client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json() == []


async def test_webhook_input_is_bounded(client):
    assert (await client.post("/v1/webhooks", json={"url": "ftp://x", "events": ["*"]})).status_code == 400
    assert (await client.post("/v1/webhooks", json={"url": "http://x.example", "events": []})).status_code == 422
    bad = await client.post("/v1/webhooks", json={"url": "http://x.example", "events": ["job.exploded"]})
    assert bad.status_code == 400 and "unknown event" in bad.text
    assert (await client.get("/v1/webhooks/99")).status_code == 404
