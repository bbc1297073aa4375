"""Admin endpoints: scan/catalog are queued tasks, priority and skip-upload, channels, and the
archive's /admin/monitor fields."""

from __future__ import annotations

from sqlalchemy import select

from reelhouse.archive.models import vods
from reelhouse.core.db.models import tasks
from reelhouse.core.jobs.kv import KV
from tests.archive_support import vod_jobs
from tests.integration.archive_api.conftest import BASE_DATE, add_vod, admin, days


async def _task(engine, task_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks).where(tasks.c.id == task_id))).one()


async def test_scan_enqueues_a_discovery_task_and_answers_at_once(client, engine):
    response = await client.post("/admin/vod/scan", params={"channel": "Bravo_1"}, headers=admin())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["channel"] == "bravo_1"
    task = await _task(engine, body["task_id"])
    assert task.kind == "vod.discover" and task.payload == {"channel": "bravo_1"} and task.status == "queued"
    default = (await client.post("/admin/vod/scan", headers=admin())).json()
    assert default["channel"] == "alpha"  # TWITCH_CHANNEL, like vod-tender
    bad = await client.post("/admin/vod/scan", params={"channel": "../etc"}, headers=admin())
    assert bad.status_code == 400 and "channel" in bad.json()["error"]


async def test_scan_without_any_channel_is_400(client, app):
    from reelhouse.archive.settings import archive_settings

    archive_settings(app.state.runtime.settings).twitch_channel = ""
    response = await client.post("/admin/vod/scan", headers=admin())
    assert response.status_code == 400 and "TWITCH_CHANNEL" in response.json()["error"]


async def test_get_no_longer_changes_state_and_says_what_to_send(client, engine):
    for path in ("/admin/vod/scan", "/admin/vod/catalog"):
        response = await client.get(path, params={"channel": "alpha"}, headers=admin())
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert f"POST {path}" in response.json()["error"]
    async with engine.connect() as conn:
        assert (await conn.execute(select(tasks.c.id))).first() is None, "nothing was queued"


async def test_catalog_enqueues_with_its_limits(client, engine):
    response = await client.post(
        "/admin/vod/catalog", params={"channel": "alpha", "max": "50", "max_age_days": "30"}, headers=admin()
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["channel"], body["max"], body["max_age_days"]) == ("ok", "alpha", 50, 30)
    task = await _task(engine, body["task_id"])
    assert task.kind == "vod.catalog" and task.payload == {"channel": "alpha", "max": 50, "max_age_days": 30}
    for params in ({"max": "-1"}, {"max": "ten"}, {"max_age_days": "1.5"}, {"max": str(2**64)}):
        bad = await client.post("/admin/vod/catalog", params=params, headers=admin())
        assert bad.status_code == 422 and next(iter(params)) in bad.json()["error"]


async def test_admin_endpoints_refuse_anonymous_and_operators(client, role_headers):
    calls = [
        ("POST", "/admin/vod/scan"),
        ("POST", "/admin/vod/catalog"),
        ("POST", "/admin/vod/priority"),
        ("PUT", "/admin/vod/priority"),
        ("POST", "/admin/vod/skip-upload"),
        ("PUT", "/admin/vod/skip-upload"),
        ("POST", "/channels"),
        ("DELETE", "/channels/alpha"),
        ("PATCH", "/channels/alpha"),
        ("PUT", "/config"),
    ]
    for method, path in calls:
        assert (await client.request(method, path, json={})).status_code == 401, path
        forbidden = await client.request(method, path, json={}, headers=role_headers["operator"])
        assert forbidden.status_code == 403 and "admin" in forbidden.json()["error"], path


async def test_priority_updates_the_vod_and_its_queued_task(runtime, client, engine):
    await add_vod(engine, "900")
    job_id = await vod_jobs(runtime).enqueue("900")
    for method in ("POST", "PUT"):
        response = await client.request(
            method, "/admin/vod/priority", json={"vod_id": "900", "priority": 75}, headers=admin()
        )
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "vod_id": "900", "priority": 75}
    async with engine.connect() as conn:
        assert (await conn.execute(select(vods.c.priority).where(vods.c.twitch_vod_id == "900"))).scalar() == 75
        task_priority = (await conn.execute(select(tasks.c.priority).where(tasks.c.job_id == job_id))).scalar()
    assert task_priority == 75  # the claim orders by it, so the change is real
    numeric_id = await client.post("/admin/vod/priority", json={"vod_id": 900, "priority": -10}, headers=admin())
    assert numeric_id.status_code == 200 and numeric_id.json()["priority"] == -10


async def test_priority_and_skip_upload_errors(client, engine):
    await add_vod(engine, "901")
    cases = [
        ("/admin/vod/priority", b"{not json", 400, "JSON"),
        ("/admin/vod/priority", b'{"priority": 5}', 400, "vod_id"),
        ("/admin/vod/priority", b'{"vod_id": "901", "priority": "high"}', 400, "priority"),
        ("/admin/vod/priority", b'{"vod_id": "901", "priority": true}', 400, "priority"),
        ("/admin/vod/priority", b'{"vod_id": "901", "priority": 99999999999}', 400, "priority"),
        ("/admin/vod/priority", b'{"vod_id": "missing", "priority": 1}', 404, "missing"),
        ("/admin/vod/skip-upload", b'{"vod_id": "901", "skip_upload": "yes"}', 400, "skip_upload"),
        ("/admin/vod/skip-upload", b'{"skip_upload": true}', 400, "vod_id"),
        ("/admin/vod/skip-upload", b'{"vod_id": "missing", "skip_upload": true}', 404, "missing"),
    ]
    for path, body, status, message in cases:
        response = await client.post(path, content=body, headers={**admin(), "Content-Type": "application/json"})
        assert response.status_code == status, (path, body)
        assert message in response.json()["error"], (path, body)


async def test_skip_upload_round_trip(client, engine):
    await add_vod(engine, "902")
    for value in (True, False, True):
        response = await client.put(
            "/admin/vod/skip-upload", json={"vod_id": "902", "skip_upload": value}, headers=admin()
        )
        assert response.json() == {"status": "ok", "vod_id": "902", "skip_upload": value}
    assert (await client.get("/vods/902")).json()["skip_upload"] is True


async def test_channels_api(client, role_headers):
    viewer = role_headers["viewer"]
    assert (await client.get("/channels")).status_code == 401
    assert (await client.get("/channels", headers=viewer)).json() == []
    created = await client.post("/channels", json={"name": "Gamma"}, headers=admin())
    assert created.status_code == 201
    assert created.json()["name"] == "gamma" and created.json()["enabled"] is True and created.json()["source"] == "api"
    assert (await client.post("/channels", json={"name": "gamma"}, headers=admin())).status_code == 409
    for bad in ({"name": "no spaces"}, {"name": 7}, {}):
        response = await client.post("/channels", json=bad, headers=admin())
        assert response.status_code == 400 and "error" in response.json()
    assert [c["name"] for c in (await client.get("/channels", headers=viewer)).json()] == ["gamma"]
    assert created.json()["record_mode"] == "vod"  # as before live recording existed
    changed = await client.patch("/channels/gamma", json={"record_mode": "both"}, headers=admin())
    assert changed.status_code == 200 and changed.json()["record_mode"] == "both"
    assert (await client.get("/channels", headers=viewer)).json()[0]["record_mode"] == "both"
    for bad in ({"record_mode": "sometimes"}, {"record_mode": 3}, {}, {"record_mode": "live", "other": 1}):
        response = await client.patch("/channels/gamma", json=bad, headers=admin())
        assert response.status_code == 400 and "error" in response.json(), bad
    unknown = await client.patch("/channels/nobody", json={"record_mode": "live"}, headers=admin())
    assert unknown.status_code == 404
    live = await client.post("/channels", json={"name": "delta", "record_mode": "live"}, headers=admin())
    assert live.status_code == 201 and live.json()["record_mode"] == "live"
    bad_mode = await client.post("/channels", json={"name": "epsilon", "record_mode": "x"}, headers=admin())
    assert bad_mode.status_code == 400
    assert (await client.delete("/channels/delta", headers=admin())).status_code == 204
    assert (await client.delete("/channels/gamma", headers=admin())).status_code == 204
    missing = await client.delete("/channels/gamma", headers=admin())
    assert missing.status_code == 404 and "gamma" in missing.json()["error"]
    assert (await client.get("/channels", headers=viewer)).json() == []


async def test_a_paused_channel_is_listed_but_not_watched_until_resumed(client, engine, role_headers):
    from reelhouse.archive.store import ChannelStore

    store = ChannelStore(engine)
    for name in ("delta", "epsilon"):
        assert (await client.post("/channels", json={"name": name}, headers=admin())).status_code == 201
    operator, viewer = role_headers["operator"], role_headers["viewer"]
    assert (await client.post("/channels/delta/pause", headers=viewer)).status_code == 403
    paused = await client.post("/channels/delta/pause", headers=operator)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    listed = {c["name"]: c["paused"] for c in (await client.get("/channels", headers=viewer)).json()}
    assert listed == {"delta": True, "epsilon": False}
    assert await store.watched_channels([]) == ["epsilon"], "discovery and chat skip a paused channel"
    resumed = await client.post("/channels/delta/resume", headers=operator)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert await store.watched_channels([]) == ["delta", "epsilon"]
    missing = await client.post("/channels/zeta/pause", headers=operator)
    assert missing.status_code == 404 and "zeta" in missing.json()["error"]
    assert (await client.post("/channels/no%20spaces/pause", headers=operator)).status_code == 400


async def test_monitor_has_vod_tender_fields(client, engine):
    await add_vod(engine, "m1", date=BASE_DATE - days(3))
    await add_vod(engine, "m2", date=BASE_DATE - days(1))
    await add_vod(engine, "m3", processing_error="yt-dlp: 404")
    await add_vod(engine, "m4", processed=True)
    await add_vod(engine, "live-1", is_placeholder=True, date=BASE_DATE - days(10))
    await KV(engine).set("job_vod_process_last", "2025-03-01T12:00:00.000Z", "alpha")
    await KV(engine).set("job_vod_process_last", "2025-03-01T12:05:00.000Z", "beta")
    anonymous = await client.get("/admin/monitor")
    assert anonymous.status_code == 401
    body = (await client.get("/admin/monitor", headers=admin())).json()
    assert (body["vods_pending"], body["vods_errored"], body["vods_processed"]) == (2, 1, 1)
    assert body["oldest_pending_vod"] == {"id": "m1", "date": "2025-02-26T12:00:00Z"}
    assert body["job_vod_process_last"] == "2025-03-01T12:05:00.000Z"  # the latest of any channel
    for key in ("job_vod_discovery_last", "job_vod_backfill_last", "job_vod_catalog_last", "circuit_state"):
        assert key in body


async def test_every_archive_mutation_rejects_anonymous_callers(app, client):
    import re

    paths = app.openapi()["paths"]
    mutations = [
        (method.upper(), path)
        for path, ops in paths.items()
        for method in ops
        if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}
        and (path.startswith(("/vods", "/admin/vod", "/channels", "/config", "/auth/twitch", "/auth/youtube")))
    ]
    assert len(mutations) == 20  # the two OAuth starts are POSTs now; channel pause, resume, PATCH
    for method, template in mutations:
        response = await client.request(method, re.sub(r"\{[^}]+\}", "1", template), json={})
        assert response.status_code == 401, (method, template)
