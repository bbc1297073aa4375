"""Audit rows are copied to a JetStream stream with 90-day retention (the machine's NATS; a
unique stream per test), once each, resuming after a restart."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import nats
import pytest

from reelhouse.core.db.engine import create_engine
from reelhouse.core.security import audit
from reelhouse.core.security.audit import append
from reelhouse.core.security.audit_stream import AuditStream
from reelhouse.core.security.keys import MasterKeys

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def engine(db_url, tmp_path):
    engine = create_engine(db_url)
    audit.bind_master_keys(engine, MasterKeys(object(), tmp_path / "data"))
    yield engine
    await engine.dispose()


async def test_audit_rows_reach_the_stream_once_with_90_day_retention(engine):
    name = f"AUDIT_TEST_{uuid.uuid4().hex[:10]}"
    subject = f"audittest{uuid.uuid4().hex[:8]}"
    await append(engine, "admin", "job.cancel", "job:1", {"why": "test"})
    await append(engine, "admin", "plugin.disabled", "plugin:storage-fs")
    stream = AuditStream(engine, NATS_URL, stream=name, subject=subject)
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    try:
        await stream.connect()
        assert await stream.publish_pending() == 2
        assert await stream.publish_pending() == 0  # the watermark holds
        await append(engine, "admin", "webhook.create", "webhook:3")
        await stream.close()
        again = AuditStream(engine, NATS_URL, stream=name, subject=subject)  # a restart resumes
        await again.connect()
        assert await again.publish_pending() == 1
        await again.close()

        info = await js.stream_info(name)
        assert info.config.max_age == pytest.approx(timedelta(days=90).total_seconds())
        assert info.state.messages == 3
        sub = await js.pull_subscribe(f"{subject}.>", durable=None, stream=name)
        messages = await sub.fetch(3, timeout=5)
        assert [m.subject for m in messages] == [
            f"{subject}.job.cancel",
            f"{subject}.plugin.disabled",
            f"{subject}.webhook.create",
        ]
        first = json.loads(messages[0].data)
        assert (first["actor"], first["action"], first["target"], first["details"]) == (
            "admin",
            "job.cancel",
            "job:1",
            {"why": "test"},
        )
        assert first["hash"] and messages[0].headers["Nats-Msg-Id"] == f"audit-{first['id']}"
    finally:
        await js.delete_stream(name)
        await nc.close()
