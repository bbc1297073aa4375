"""The audit chain is keyed and sealed: removing the newest rows, or recomputing the chain
without the key after an edit, makes `reelhouse admin audit verify` fail; the head is exported."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select, text, update

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.models import audit_log
from reelhouse.core.http.status import export_audit_head
from reelhouse.core.security import audit
from reelhouse.core.security.keys import MasterKeys

from .test_secrets_at_rest import cli


@pytest.fixture
async def keyed(db_url, tmp_path):
    engine = create_engine(db_url)
    audit.bind_master_keys(engine, MasterKeys(object(), tmp_path / "data"))
    yield engine
    await engine.dispose()


def verify(db_url, tmp_path, *args: str):
    return cli(db_url, tmp_path / "data", "audit", "verify", *args)


def _unkeyed(prev: str, row) -> str:
    canonical = json.dumps(
        [prev, row.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), row.actor, row.action, row.target, row.details],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.slow
async def test_truncation_and_recomputed_chains_are_detected(keyed, db_url, tmp_path):
    ids = [await audit.append(keyed, f"user:{i}", "thing.done", f"thing:{i}", {"n": i}) for i in range(5)]
    ok = verify(db_url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    head_line = next(line for line in ok.stdout.splitlines() if line.startswith("head "))
    head, count = head_line.split()[1], int(head_line.split()[3])
    assert count == 5 and len(head) == 64

    # More rows later: the kept anchor still verifies; a wrong count does not.
    await audit.append(keyed, "user:9", "thing.done")
    assert verify(db_url, tmp_path, "--expect-head", head, "--expect-count", "5").returncode == 0
    assert verify(db_url, tmp_path, "--expect-head", head, "--expect-count", "4").returncode == 1

    # Deleting the newest row: the seal no longer matches.
    async with keyed.begin() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.id == max(ids) + 1))
    cut = verify(db_url, tmp_path)
    assert cut.returncode == 1 and "rows removed" in cut.stderr

    # Even with the seal rewritten by someone without the key, the operator's anchor catches it.
    async with keyed.begin() as conn:
        await conn.execute(text("DELETE FROM kv WHERE key = 'audit_chain_head'"))
        await conn.execute(delete(audit_log).where(audit_log.c.id == ids[-1]))
    assert verify(db_url, tmp_path).returncode == 1
    anchored = verify(db_url, tmp_path, "--expect-head", head, "--expect-count", "5")
    assert anchored.returncode == 1


@pytest.mark.slow
async def test_an_edit_with_the_chain_recomputed_without_the_key_is_detected(keyed, db_url, tmp_path):
    for i in range(4):
        await audit.append(keyed, f"user:{i}", "vault.release", f"plan:{i}")
    async with keyed.begin() as conn:
        await conn.execute(update(audit_log).where(audit_log.c.target == "plan:1").values(actor="user:666"))
        rows = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).all()
        prev = audit.GENESIS
        for row in rows:  # what an attacker without the key can do: recompute plain SHA-256
            digest = _unkeyed(prev, row)
            await conn.execute(update(audit_log).where(audit_log.c.id == row.id).values(prev_hash=prev, hash=digest))
            prev = digest
    broken = verify(db_url, tmp_path)
    assert broken.returncode == 1 and f"row id {rows[0].id}" in broken.stderr and "keyed hash" in broken.stderr


async def test_rows_written_before_the_chain_was_keyed_are_rekeyed_once(keyed):
    async with keyed.begin() as conn:  # two legacy rows: unkeyed SHA-256 from GENESIS
        prev = audit.GENESIS
        for i in range(2):
            at = audit.utcnow()
            values = {"at": at, "actor": "legacy", "action": "old", "target": f"t:{i}", "details": {}}
            row = type("Row", (), values)
            digest = _unkeyed(prev, row)
            await conn.execute(audit_log.insert().values(**values, prev_hash=prev, hash=digest))
            prev = digest
    await audit.append(keyed, "user:1", "new.thing")
    result = await audit.verify(keyed)
    assert result.ok and result.rows_checked == 4  # 2 legacy, the rekey marker, the new row
    async with keyed.connect() as conn:
        marker = (await conn.execute(select(audit_log).where(audit_log.c.action == "audit.chain.keyed"))).one()
    assert marker.details == {"legacy_rows": 2, "legacy_ok": True}


async def test_the_head_is_exported_as_a_log_line_and_metrics(keyed, caplog):
    await audit.append(keyed, "user:1", "x")
    head = await audit.current_head(keyed)
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="reelhouse.status"):
        task = asyncio.create_task(export_audit_head(keyed, timedelta(hours=1), stop))
        async with asyncio.timeout(10):
            while not any("audit head" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
        stop.set()
        await task
    assert any(head.head in r.getMessage() and r.audit_rows == 1 for r in caplog.records if hasattr(r, "audit_rows"))
    assert REGISTRY.get_sample_value("reelhouse_audit_log_rows") == 1
    assert REGISTRY.get_sample_value("reelhouse_audit_log_head", {"head": head.head}) == 1
