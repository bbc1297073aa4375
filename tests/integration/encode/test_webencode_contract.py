"""A client written for WebEncode's API gets responses that conform to it: every documented
status and body schema (tests/contracts/webencode.py, reelhouse's deliberate differences marked
there and in docs/API.md), validated on real responses; the job SSE really streams; the health
check really checks the database, NATS and storage and names what failed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema

from tests.contracts.webencode import JOB_EVENT, OPERATIONS
from tests.integration.encode.conftest import admin_headers, live_server

NATS_URL = "nats://127.0.0.1:4222"


def check(path: str, method: str, response: httpx.Response) -> Any:
    documented = OPERATIONS[(path, method)]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path}: {status} not documented: {response.text[:300]}"
    schema = documented[status]
    if schema is not None:
        jsonschema.validate(response.json(), schema)
    return response.json() if response.content and "json" in response.headers.get("content-type", "") else None


async def test_every_route_needs_credentials(client):
    anonymous = {"Authorization": ""}
    for (path, method), documented in OPERATIONS.items():
        if "401" not in documented:
            continue  # /v1/workers: anonymous callers get pseudonyms (docs/API.md)
        url = path.replace("{id}", "1")
        response = await client.request(method.upper(), url, headers=anonymous, json={} if method != "get" else None)
        assert response.status_code == 401, (method, path, response.status_code)


async def test_jobs_profiles_plugins_webhooks_audit_conform(client):
    created = check(
        "/v1/jobs",
        "post",
        await client.post("/v1/jobs", json={"source_url": "http://127.0.0.1:9/v.mp4", "profiles": ["hls-default"]}),
    )
    assert created["source_url"] == "http://127.0.0.1:9/v.mp4" and created["profiles"] == ["hls-default"]
    assert created["status"] == "queued" and created["progress_pct"] == 0
    job_id = created["id"]
    check("/v1/jobs", "post", await client.post("/v1/jobs", json={"profiles": ["hls-default"]}))
    listed = check("/v1/jobs", "get", await client.get("/v1/jobs"))
    assert [j["id"] for j in listed] == [job_id]
    detail = check("/v1/jobs/{id}", "get", await client.get(f"/v1/jobs/{job_id}"))
    assert detail["job"]["id"] == job_id and detail["tasks"][0]["type"] == "fetch"
    check("/v1/jobs/{id}", "get", await client.get("/v1/jobs/999999"))
    cancelled = check("/v1/jobs/{id}/cancel", "post", await client.post(f"/v1/jobs/{job_id}/cancel"))
    assert cancelled["status"] == "cancelled"
    retried = check("/v1/jobs/{id}/retry", "post", await client.post(f"/v1/jobs/{job_id}/retry"))
    assert retried["id"] == job_id and retried["status"] == "queued"
    logs = check("/v1/jobs/{id}/logs", "get", await client.get(f"/v1/jobs/{job_id}/logs"))
    assert logs[0]["message"] == "encode.fetch queued" and logs[0]["level"] == "info"
    publish = {"platform": "youtube", "access_token": "t"}
    check("/v1/jobs/{id}/publish", "post", await client.post(f"/v1/jobs/{job_id}/publish", json=publish))
    check("/v1/jobs/{id}/publish", "post", await client.post(f"/v1/jobs/{job_id}/publish", json={}))
    check("/v1/jobs/{id}", "delete", await client.delete(f"/v1/jobs/{job_id}"))  # queued again: 409
    check("/v1/jobs/{id}/cancel", "post", await client.post(f"/v1/jobs/{job_id}/cancel"))
    check("/v1/jobs/{id}", "delete", await client.delete(f"/v1/jobs/{job_id}"))
    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 404
    check("/v1/jobs/{id}", "delete", await client.delete(f"/v1/jobs/{job_id}"))

    profiles = check("/v1/profiles", "get", await client.get("/v1/profiles"))
    assert any(p["id"] == "hls-default" and p["is_system"] for p in profiles)
    check("/v1/profiles/{id}", "get", await client.get("/v1/profiles/hls-default"))
    check("/v1/profiles/{id}", "get", await client.get("/v1/profiles/nope"))

    check("/v1/plugins", "get", await client.get("/v1/plugins"))
    check("/v1/plugins/{id}", "get", await client.get("/v1/plugins/encoder-ffmpeg"))
    check("/v1/plugins/{id}", "get", await client.get("/v1/plugins/nope"))
    check("/v1/plugins/{id}", "put", await client.put("/v1/plugins/storage-fs", json={"config": {"x": 1}}))
    check("/v1/plugins/{id}/disable", "post", await client.post("/v1/plugins/storage-fs/disable"))
    check("/v1/plugins/{id}/enable", "post", await client.post("/v1/plugins/storage-fs/enable"))

    secret = "contract-secret-value-123"
    hook = check(
        "/v1/webhooks",
        "post",
        await client.post(
            "/v1/webhooks", json={"url": "https://hooks.example.com/x", "secret": secret, "events": ["job.completed"]}
        ),
    )
    check(
        "/v1/webhooks", "post", await client.post("/v1/webhooks", json={"url": "file:///etc/passwd", "events": ["*"]})
    )
    for response in (await client.get("/v1/webhooks"), await client.get(f"/v1/webhooks/{hook['id']}")):
        assert secret not in response.text
    check("/v1/webhooks", "get", await client.get("/v1/webhooks"))
    check("/v1/webhooks/{id}", "get", await client.get(f"/v1/webhooks/{hook['id']}"))
    check("/v1/webhooks/{id}", "delete", await client.delete(f"/v1/webhooks/{hook['id']}"))
    check("/v1/webhooks/{id}", "get", await client.get(f"/v1/webhooks/{hook['id']}"))

    audit = check("/v1/audit", "get", await client.get("/v1/audit", params={"limit": 50, "offset": 0}))
    assert {"encode.submit", "job.cancel", "job.retry", "webhook.create"} <= {a["action"] for a in audit}
    assert any(a["resource_type"] == "job" and a["resource_id"] == job_id for a in audit)


async def test_health_checks_each_service_for_real(client, runtime, monkeypatch):
    stats = check("/v1/system/stats", "get", await client.get("/v1/system/stats"))
    assert stats["jobs"]["total"] == 0
    health = check("/v1/system/health", "get", await client.get("/v1/system/health"))
    assert health["services"] == {"database": "healthy", "storage": "healthy", "nats": "not_configured"}
    assert health["status"] == "healthy"

    monkeypatch.setattr(runtime.settings.jobs, "nats_url", NATS_URL)
    health = check("/v1/system/health", "get", await client.get("/v1/system/health"))
    assert health["services"]["nats"] == "healthy", health  # the machine's NATS with JetStream

    monkeypatch.setattr(runtime.settings.jobs, "nats_url", "nats://127.0.0.1:1")
    health = check("/v1/system/health", "get", await client.get("/v1/system/health"))
    assert health["services"]["nats"] == "unhealthy" and health["status"] == "degraded"
    assert "nats" in health["errors"] and "database" not in health["errors"]


async def test_job_events_stream_while_the_connection_is_open(runtime, settings, monkeypatch):
    from reelhouse.encode.services import EncodeServices

    services = runtime.component(EncodeServices)
    async with (
        live_server(runtime, settings) as base,
        httpx.AsyncClient(base_url=base, headers=admin_headers(), timeout=30) as http,
    ):
        assert (await http.get("/v1/events/jobs", headers={"Authorization": ""})).status_code == 401
        for _ in range(100):  # serve's embedded worker registers at start-up
            workers = check("/v1/workers", "get", await http.get("/v1/workers"))
            if workers:
                break
            await asyncio.sleep(0.1)
        assert workers and workers[0]["is_healthy"] is True
        async with http.stream("GET", "/v1/events/jobs") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: connected"
            assert json.loads((await anext(lines)).removeprefix("data: ")) == {"status": "connected"}
            created = await http.post("/v1/jobs", json={"source_url": "http://127.0.0.1:9/v.mp4"})
            job_id = created.json()["id"]
            await services.events.poll()  # as the feed does every ENCODE_EVENT_POLL_INTERVAL

            async def first_event() -> dict[str, Any]:
                async for line in lines:
                    if line.startswith("data: "):
                        return json.loads(line.removeprefix("data: "))
                raise AssertionError("stream ended")

            event = await asyncio.wait_for(first_event(), 20)
            jsonschema.validate(event, JOB_EVENT)
            assert event["job_id"] == job_id and event["event_type"] in ("job.created", "job.started")
        async with http.stream("GET", f"/v1/events/jobs/{job_id}") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: connected"
