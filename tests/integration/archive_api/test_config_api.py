"""GET/PUT /config: vod-tender's safe keys, validated like the environment variables, and
overrides the pipeline really reads."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from reelhouse.archive.settings import archive_settings
from reelhouse.core.db.models import kv, tasks
from reelhouse.core.jobs.kv import KV
from tests.archive_support import vod_jobs
from tests.integration.archive_api.conftest import add_vod, admin

# vod-tender's safe keys (reference §1 #8), in its order.
SAFE_KEYS = (
    "LOG_LEVEL",
    "LOG_FORMAT",
    "DATA_DIR",
    "VOD_PROCESS_INTERVAL",
    "PROCESSING_RETRY_COOLDOWN",
    "DOWNLOAD_MAX_ATTEMPTS",
    "DOWNLOAD_BACKOFF_BASE",
    "UPLOAD_MAX_ATTEMPTS",
    "UPLOAD_BACKOFF_BASE",
    "RETAIN_KEEP_NEWER_THAN_DAYS",
    "RETENTION_KEEP_DAYS",
    "RETENTION_KEEP_COUNT",
    "RETENTION_DRY_RUN",
    "RETENTION_INTERVAL",
    "BACKFILL_UPLOAD_DAILY_LIMIT",
)


async def test_get_config_is_public_and_lists_only_safe_keys(client, archive_env, runtime):
    assert runtime.overrides.keys == SAFE_KEYS
    response = await client.get("/config")
    assert response.status_code == 200
    body = response.json()
    assert set(body) <= set(SAFE_KEYS)
    assert list(body) == [key for key in SAFE_KEYS if key in body], "vod-tender's order"
    # Defaults are the settings' values, rendered as the variable would be written.
    assert body["VOD_PROCESS_INTERVAL"] == "60s" and body["DOWNLOAD_MAX_ATTEMPTS"] == "5"
    assert body["DATA_DIR"] == archive_env["DATA_DIR"]
    assert "RETENTION_DRY_RUN" not in body  # empty values are left out, as in vod-tender
    assert "ADMIN_TOKEN" not in body and "MASTER_ENCRYPTION_KEY" not in body


async def test_put_config_takes_effect_where_the_pipeline_reads(client, engine, runtime):
    response = await client.put(
        "/config",
        json={"VOD_PROCESS_INTERVAL": "5m", "DOWNLOAD_MAX_ATTEMPTS": 3, "RETENTION_DRY_RUN": True},
        headers=admin(),
    )
    assert response.status_code == 204
    body = (await client.get("/config")).json()
    assert body["VOD_PROCESS_INTERVAL"] == "5m" and body["DOWNLOAD_MAX_ATTEMPTS"] == "3"
    assert body["RETENTION_DRY_RUN"] == "true"
    # Stored where vod-tender put it, on the kv primary key (channel, key) it failed to use.
    async with engine.connect() as conn:
        row = (await conn.execute(select(kv.c.channel, kv.c.value).where(kv.c.key == "cfg:VOD_PROCESS_INTERVAL"))).one()
    assert tuple(row) == ("", "5m")
    base = archive_settings(runtime.settings)
    applied = await runtime.overrides.effective(base)
    assert applied.upload_max_attempts == base.upload_max_attempts  # no override: the environment's
    assert applied.vod_process_interval == timedelta(minutes=5) and applied.download_max_attempts == 3
    assert applied.retention_dry_run is True
    assert base.vod_process_interval == timedelta(minutes=1)  # the environment's copy is untouched
    # What the pipeline's handlers and a newly enqueued VOD job actually use.
    status = (await client.get("/status")).json()
    assert status["retry_config"]["download_max_attempts"] == 3


async def test_null_removes_an_override(client, runtime):
    await client.put("/config", json={"UPLOAD_MAX_ATTEMPTS": "9"}, headers=admin())
    assert (await client.get("/config")).json()["UPLOAD_MAX_ATTEMPTS"] == "9"
    assert (await client.put("/config", json={"UPLOAD_MAX_ATTEMPTS": None}, headers=admin())).status_code == 204
    assert (await client.get("/config")).json()["UPLOAD_MAX_ATTEMPTS"] == "5"
    assert await runtime.overrides.load() == {}


async def test_bad_values_and_keys_are_400_and_nothing_is_written(client, runtime, role_headers):
    cases = [
        ({"VOD_PROCESS_INTERVAL": "soon"}, "VOD_PROCESS_INTERVAL"),
        ({"VOD_PROCESS_INTERVAL": "0s"}, "at least"),
        ({"DOWNLOAD_MAX_ATTEMPTS": 0}, "DOWNLOAD_MAX_ATTEMPTS"),
        ({"DOWNLOAD_MAX_ATTEMPTS": "3.5"}, "integer"),
        ({"RETENTION_DRY_RUN": "maybe"}, "RETENTION_DRY_RUN"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"ADMIN_TOKEN": "x"}, "unknown config key"),
        ({"DATA_DIR": "/elsewhere"}, "start-up"),
        ({"LOG_FORMAT": "json"}, "start-up"),
        ({"RETENTION_KEEP_COUNT": [1]}, "RETENTION_KEEP_COUNT"),
        # One bad key fails the whole request: the good one is not applied either.
        ({"UPLOAD_MAX_ATTEMPTS": "4", "BACKFILL_UPLOAD_DAILY_LIMIT": "-1"}, "BACKFILL_UPLOAD_DAILY_LIMIT"),
        ({}, "empty"),
    ]
    for body, message in cases:
        response = await client.put("/config", json=body, headers=admin())
        assert response.status_code == 400, body
        assert message in response.json()["error"], (body, response.json())
    not_object = await client.put("/config", json=["VOD_PROCESS_INTERVAL"], headers=admin())
    assert not_object.status_code == 400
    assert await runtime.overrides.load() == {}
    assert (await client.put("/config", json={"LOG_LEVEL": "debug"})).status_code == 401
    viewer = await client.put("/config", json={"LOG_LEVEL": "debug"}, headers=role_headers["viewer"])
    assert viewer.status_code == 403


async def test_log_level_applies_to_this_process(client):
    root = logging.getLogger()
    before = root.level
    try:
        assert (await client.put("/config", json={"LOG_LEVEL": "warn"}, headers=admin())).status_code == 204
        assert root.level == logging.WARNING
        assert (await client.get("/config")).json()["LOG_LEVEL"] == "warn"
    finally:
        root.setLevel(before)


async def test_hand_written_bad_override_is_ignored_not_fatal(client, engine, runtime):
    # An operator may write kv with SQL; a typo must not stop the pipeline.
    await KV(engine).set("cfg:VOD_PROCESS_INTERVAL", "five minutes")
    await KV(engine).set("cfg:DOWNLOAD_MAX_ATTEMPTS", "2")
    assert await runtime.overrides.load() == {"DOWNLOAD_MAX_ATTEMPTS": "2"}
    settings = await runtime.overrides.effective(archive_settings(runtime.settings))
    assert settings.vod_process_interval == timedelta(minutes=1) and settings.download_max_attempts == 2
    # The pipeline's new VOD job gets the overridden attempt budget.
    await add_vod(engine, "cfg1")
    job_id = await vod_jobs(runtime).enqueue("cfg1")
    async with engine.connect() as conn:
        attempts = (await conn.execute(select(tasks.c.max_attempts).where(tasks.c.job_id == job_id))).scalar()
    assert attempts == 2
    assert (await client.get("/config")).json()["VOD_PROCESS_INTERVAL"] == "60s"


async def test_log_level_watcher_follows_the_override_in_every_process(runtime):
    import asyncio

    root = logging.getLogger()
    before = root.level
    stop = asyncio.Event()
    watcher = asyncio.create_task(runtime.overrides.watch_log_level(stop, every=0.05))
    try:
        await runtime.overrides.write({"LOG_LEVEL": "error"})  # as another API node would
        for _ in range(100):
            if root.level == logging.ERROR:
                break
            await asyncio.sleep(0.05)
        assert root.level == logging.ERROR
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)
        root.setLevel(before)
