"""Which transport `reelhouse worker` picks, and the NATS names it uses."""

from __future__ import annotations

import asyncio

import pytest

from reelhouse.config import ConfigError, Settings
from reelhouse.core.jobs.remote import bus
from reelhouse.core.jobs.remote.run import no_database_engine, transport_of


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("DATABASE_URL", "DB_DSN", "NATS_URL", "WORKER_TRANSPORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


def test_nats_mode_needs_nats_and_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    assert transport_of(Settings()) == "database"
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    assert transport_of(Settings()) == "nats"
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/reelhouse")
    assert transport_of(Settings()) == "database"  # a worker with the database claims from SQL
    monkeypatch.setenv("WORKER_TRANSPORT", "nats")
    with pytest.raises(ConfigError, match="unset DATABASE_URL"):
        transport_of(Settings())


def test_the_nats_worker_engine_reaches_no_database() -> None:
    async def use() -> None:
        engine = no_database_engine()
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    with pytest.raises(RuntimeError, match="NATS mode"):
        asyncio.run(use())


def test_subjects_per_capability_and_dedupe_ids() -> None:
    names = bus.Names("rh")
    assert names.task_subject(None) == "rh.tasks.cpu"
    assert names.task_subject("h264_nvenc") == "rh.tasks.h264_nvenc"
    assert names.task_subject("a.b c*") == "rh.tasks.a_b_c_"  # never a wildcard or a new token
    assert names.work_stream == "RH_WORK" and names.events_stream == "RH_EVENTS"
    assert bus.task_msg_id(12, 3) == "t12-f3"
