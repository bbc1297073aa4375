"""The CLI against a real database: user creation, audit chain verification, job commands."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import text

from reelhouse.core.db.engine import create_engine
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.security import audit
from reelhouse.core.security.keys import MasterKeys


def reelhouse(db_url: str, tmp_path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url, "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "warning"}
    return subprocess.run(
        [sys.executable, "-m", "reelhouse.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def keyed_engine(db_url: str, tmp_path):
    """An engine whose audit appends use the same master key as the CLI (DATA_DIR's key file)."""
    engine = create_engine(db_url)
    audit.bind_master_keys(engine, MasterKeys(object(), tmp_path / "data"))
    return engine


async def test_audit_verify_names_the_tampered_row(db_url, tmp_path):
    engine = keyed_engine(db_url, tmp_path)
    ids = [await audit.append(engine, "alice", "vault.release", f"plan:{i}", {"n": i}) for i in range(5)]
    ok = reelhouse(db_url, tmp_path, "admin", "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "5 rows verified" in ok.stdout
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = :id"), {"id": ids[2]})
    broken = reelhouse(db_url, tmp_path, "admin", "audit", "verify")
    assert broken.returncode == 1
    assert f"row id {ids[2]}" in broken.stderr and "changed" in broken.stderr
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET actor = 'alice' WHERE id = :id"), {"id": ids[2]})
        await conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[3]})
    removed = reelhouse(db_url, tmp_path, "admin", "audit", "verify")
    assert removed.returncode == 1 and f"row id {ids[4]}" in removed.stderr
    await engine.dispose()


async def test_create_user_and_job_commands(db_url, tmp_path):
    created = reelhouse(
        db_url, tmp_path, "admin", "create-user", "ops", "--role", "operator", stdin="a long enough password\n"
    )
    assert created.returncode == 0, created.stderr
    duplicate = reelhouse(db_url, tmp_path, "admin", "create-user", "ops", stdin="another password\n")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    engine = create_engine(db_url)
    enq = await TaskQueue(engine).enqueue("noop.kind", {"x": 1})
    shown = reelhouse(db_url, tmp_path, "jobs", "show", str(enq.job_id))
    assert shown.returncode == 0 and '"noop.kind"' in shown.stdout
    cancelled = reelhouse(db_url, tmp_path, "jobs", "cancel", str(enq.job_id))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    listed = reelhouse(db_url, tmp_path, "tasks", "list", "--status", "cancelled")
    assert listed.returncode == 0 and "noop.kind" in listed.stdout
    retried = reelhouse(db_url, tmp_path, "tasks", "retry", str(enq.task_id))
    assert retried.returncode == 0
    missing = reelhouse(db_url, tmp_path, "jobs", "show", "999999")
    assert missing.returncode == 1 and "not found" in missing.stderr
    await engine.dispose()


def test_invalid_config_stops_startup_naming_the_variable(tmp_path):
    missing = reelhouse(f"sqlite:///{tmp_path}/x.db", tmp_path, "status")
    assert missing.returncode == 2 and "no database at" in missing.stderr and "reelhouse migrate" in missing.stderr
    assert not (tmp_path / "x.db").exists(), "a command other than migrate/serve never creates a database"
    assert reelhouse(f"sqlite:///{tmp_path}/x.db", tmp_path, "migrate").returncode == 0
    result = reelhouse(f"sqlite:///{tmp_path}/x.db", tmp_path, "status")
    assert result.returncode == 0, result.stderr  # sqlite:// is translated, not rejected
    assert "database: SQLite" in result.stderr and '"queue_depth"' in result.stdout  # /status's summary
    env_bad = {**os.environ, "CIRCUIT_OPEN_COOLDOWN": "five minutes", "DATA_DIR": str(tmp_path)}
    bad = subprocess.run(
        [sys.executable, "-m", "reelhouse.cli", "status"], env=env_bad, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "CIRCUIT_OPEN_COOLDOWN" in bad.stderr
    env_url = {**os.environ, "DATABASE_URL": "mysql://x", "DATA_DIR": str(tmp_path)}
    bad_url = subprocess.run(
        [sys.executable, "-m", "reelhouse.cli", "status"], env=env_url, capture_output=True, text=True, timeout=60
    )
    assert bad_url.returncode == 2 and "DATABASE_URL" in bad_url.stderr
