"""Append-only audit log with a hash chain.

Each row's hash covers its content and the previous row's hash, so changing, deleting or
reordering any row breaks verification from that row on. Rows hold ids, never PII.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import audit_log
from reelhouse.core.db.types import utcnow

GENESIS = "0" * 64


def row_hash(prev_hash: str, at: str, actor: str, action: str, target: str | None,
             details: dict[str, Any]) -> str:
    canonical = json.dumps([prev_hash, at, actor, action, target, details],
                           sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _timestamp(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def append(engine: AsyncEngine, actor: str, action: str, target: str | None = None,
                 details: dict[str, Any] | None = None) -> int:
    """Append one entry. Appends are serialised (write lock / advisory lock) so the chain never
    forks when two requests audit at the same time."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            return await append_in(conn, actor, action, target, details)
    finally:
        await conn.close()


async def append_in(conn: AsyncConnection, actor: str, action: str, target: str | None = None,
                    details: dict[str, Any] | None = None) -> int:
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
    prev = (await conn.execute(
        select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
    )).scalar() or GENESIS
    now = utcnow()
    details = details or {}
    digest = row_hash(prev, _timestamp(now), actor, action, target, details)
    result = await conn.execute(audit_log.insert().values(
        at=now, actor=actor, action=action, target=target, details=details,
        prev_hash=prev, hash=digest,
    ).returning(audit_log.c.id))
    return int(result.scalar_one())


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    bad_row_id: int | None = None
    problem: str | None = None


async def verify(engine: AsyncEngine, batch: int = 5000) -> VerifyResult:
    """Walk the chain in id order; report the first row whose link or content does not match."""
    prev, checked, last_id = GENESIS, 0, 0
    async with engine.connect() as conn:
        while True:
            rows = (await conn.execute(
                select(audit_log).where(audit_log.c.id > last_id).order_by(audit_log.c.id).limit(batch)
            )).all()
            if not rows:
                return VerifyResult(True, checked)
            for row in rows:
                if row.prev_hash != prev:
                    return VerifyResult(False, checked, row.id, "previous-hash link broken (row removed or reordered)")
                expected = row_hash(row.prev_hash, _timestamp(row.at), row.actor, row.action,
                                    row.target, row.details)
                if expected != row.hash:
                    return VerifyResult(False, checked, row.id, "content does not match its hash (row changed)")
                prev, last_id, checked = row.hash, row.id, checked + 1
