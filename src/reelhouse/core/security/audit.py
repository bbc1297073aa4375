"""Append-only audit log: a keyed hash chain with a sealed head.

Each row's hash is an HMAC-SHA256, under the chain key, of its content and the previous row's
hash: changing, reordering or removing a row breaks verification from that row on, and whoever
edits the table without the key cannot recompute a chain that verifies. The chain key is random,
stored in `kv` (`audit_chain_key`) encrypted under the master key, so rotating the master key
re-wraps it and the chain itself never changes.

A chain alone cannot show that its newest rows were cut off, so every append also rewrites the
*seal* (`kv` `audit_chain_head`: row count, head hash and their HMAC) in the same transaction;
`verify` compares the chain's end with the seal, and with a head and count the operator kept
elsewhere (`--expect-head/--expect-count`, fed by the periodic export in `export_head`).

Rows hold ids, never PII. The key travels with the engine (`bind_master_keys`), so every caller's
`append(engine, ...)` writes keyed rows without passing keys around.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import audit_log
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.kv import get_value, set_value
from reelhouse.core.security.keys import MasterKeys

GENESIS = "0" * 64
CHAIN_KEY = "audit_chain_key"
HEAD_SEAL = "audit_chain_head"
_KEYS_OPTION = "reelhouse_master_keys"
_ADVISORY_LOCK = 4242001


class AuditKeyMissing(RuntimeError):
    """The engine has no master keys bound (a bug in how the process was assembled)."""


def bind_master_keys(engine: AsyncEngine, keys: MasterKeys) -> None:
    """Attach the process's master keys to `engine`: audit appends and secret stores on any
    connection of it find them there."""
    engine.update_execution_options(**{_KEYS_OPTION: keys})


def master_keys_of(engine: AsyncEngine | AsyncConnection) -> MasterKeys | None:
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine.sync_connection
    if sync is None:
        return None
    found = sync.get_execution_options().get(_KEYS_OPTION)
    return found if isinstance(found, MasterKeys) else None


def row_hash(key: bytes, prev_hash: str, at: str, actor: str, action: str, target: str | None, details: Any) -> str:
    canonical = json.dumps(
        [prev_hash, at, actor, action, target, details], sort_keys=True, separators=(",", ":"), default=str
    )
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def _seal_mac(key: bytes, count: int, head: str) -> str:
    return hmac.new(key, f"audit-head|{count}|{head}".encode(), hashlib.sha256).hexdigest()


def _timestamp(value: Any) -> str:
    return str(value.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


async def chain_key(conn: AsyncConnection, keys: MasterKeys, *, create: bool = True) -> bytes | None:
    """The chain key, created (and sealed under the master key) on first use. Callers hold the
    audit write lock, so two processes never create two keys."""
    stored = await get_value(conn, CHAIN_KEY)
    keyring = keys.keyring()
    if stored is not None:
        return bytes.fromhex(keyring.decrypt_text(stored, CHAIN_KEY))
    if not create:
        return None
    key = secrets.token_bytes(32)
    await set_value(conn, CHAIN_KEY, keyring.encrypt(key.hex(), CHAIN_KEY))
    await _rekey_existing_rows(conn, key)
    return key


async def _rekey_existing_rows(conn: AsyncConnection, key: bytes) -> None:
    """Rows written before the chain was keyed (unkeyed SHA-256) are re-hashed under the key
    once, after their old chain has been checked; the first keyed row records how that went."""
    rows = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).all()
    if not rows:
        return
    legacy_ok, prev_old, prev_new = True, GENESIS, GENESIS
    for row in rows:
        canonical = json.dumps(
            [row.prev_hash, _timestamp(row.at), row.actor, row.action, row.target, row.details],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        legacy_ok = (
            legacy_ok and row.prev_hash == prev_old and hashlib.sha256(canonical.encode()).hexdigest() == row.hash
        )
        prev_old = row.hash
        digest = row_hash(key, prev_new, _timestamp(row.at), row.actor, row.action, row.target, row.details)
        await conn.execute(update(audit_log).where(audit_log.c.id == row.id).values(prev_hash=prev_new, hash=digest))
        prev_new = digest
    await set_value(conn, HEAD_SEAL, _seal_text(key, len(rows), prev_new))
    await _insert(conn, key, "system", "audit.chain.keyed", None, {"legacy_rows": len(rows), "legacy_ok": legacy_ok})


def _seal_text(key: bytes, count: int, head: str) -> str:
    return f"{count}:{head}:{_seal_mac(key, count, head)}"


def _parse_seal(text: str | None) -> tuple[int, str, str] | None:
    if not text:
        return None
    try:
        count, head, mac = text.split(":")
        return int(count), head, mac
    except ValueError:
        return None


async def append(
    engine: AsyncEngine, actor: str, action: str, target: str | None = None, details: dict[str, Any] | None = None
) -> int:
    """Append one entry. Appends are serialised (write lock / advisory lock) so the chain never
    forks when two requests audit at the same time."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            return await append_in(conn, actor, action, target, details)
    finally:
        await conn.close()


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})")


def _keys(conn: AsyncConnection) -> MasterKeys:
    keys = master_keys_of(conn)
    if keys is None:
        raise AuditKeyMissing("no master keys are bound to this engine (core.security.audit.bind_master_keys)")
    return keys


async def append_in(
    conn: AsyncConnection, actor: str, action: str, target: str | None = None, details: dict[str, Any] | None = None
) -> int:
    await _lock(conn)
    key = await chain_key(conn, _keys(conn))
    assert key is not None
    return await _insert(conn, key, actor, action, target, details or {})


async def _insert(
    conn: AsyncConnection, key: bytes, actor: str, action: str, target: str | None, details: dict[str, Any]
) -> int:
    prev = (await conn.execute(select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1))).scalar() or GENESIS
    seal = _parse_seal(await get_value(conn, HEAD_SEAL))
    count = seal[0] if seal else (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
    now = utcnow()
    digest = row_hash(key, prev, _timestamp(now), actor, action, target, details)
    result = await conn.execute(
        audit_log.insert()
        .values(at=now, actor=actor, action=action, target=target, details=details, prev_hash=prev, hash=digest)
        .returning(audit_log.c.id)
    )
    await set_value(conn, HEAD_SEAL, _seal_text(key, count + 1, digest))
    return int(result.scalar_one())


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    head: str = GENESIS
    bad_row_id: int | None = None
    problem: str | None = None


async def verify(
    engine: AsyncEngine,
    *,
    expect_head: str | None = None,
    expect_count: int | None = None,
    batch: int = 5000,
) -> VerifyResult:
    """Walk the chain in id order; report the first row whose link or keyed hash does not
    match, then check the chain's end against the seal and against the operator's anchor."""
    keys = master_keys_of(engine)
    if keys is None:
        raise AuditKeyMissing("no master keys are bound to this engine")
    prev, checked, last_id = GENESIS, 0, 0
    anchor_seen = expect_head is None
    async with engine.connect() as conn:
        key = await chain_key(conn, keys, create=False)
        seal = _parse_seal(await get_value(conn, HEAD_SEAL))
        while True:
            rows = (
                await conn.execute(
                    select(audit_log).where(audit_log.c.id > last_id).order_by(audit_log.c.id).limit(batch)
                )
            ).all()
            if not rows:
                break
            if key is None:
                return VerifyResult(False, 0, GENESIS, rows[0].id, "rows exist but the chain key is missing")
            for row in rows:
                if row.prev_hash != prev:
                    return VerifyResult(
                        False, checked, prev, row.id, "previous-hash link broken (row removed or reordered)"
                    )
                expected = row_hash(
                    key, row.prev_hash, _timestamp(row.at), row.actor, row.action, row.target, row.details
                )
                if not hmac.compare_digest(expected, row.hash):
                    return VerifyResult(False, checked, prev, row.id, "content does not match its keyed hash (changed)")
                prev, last_id, checked = row.hash, row.id, checked + 1
                if expect_head is not None and row.hash == expect_head:
                    anchor_seen = True
                    if expect_count is not None and checked != expect_count:
                        return VerifyResult(
                            False, checked, prev, row.id, f"expected head is row {checked}, not row {expect_count}"
                        )
    return _check_end(key, seal, checked, prev, anchor_seen, expect_head, expect_count)


def _check_end(
    key: bytes | None,
    seal: tuple[int, str, str] | None,
    checked: int,
    head: str,
    anchor_seen: bool,
    expect_head: str | None,
    expect_count: int | None,
) -> VerifyResult:
    if checked and (seal is None or key is None):
        return VerifyResult(False, checked, head, None, "the head seal is missing")
    if seal is not None and key is not None:
        count, sealed_head, mac = seal
        if not hmac.compare_digest(_seal_mac(key, count, sealed_head), mac):
            return VerifyResult(False, checked, head, None, "the head seal does not authenticate (edited)")
        if (count, sealed_head) != (checked, head):
            return VerifyResult(
                False,
                checked,
                head,
                None,
                f"the chain ends at row {checked} but was sealed at row {count}: rows removed",
            )
    if not anchor_seen:
        return VerifyResult(False, checked, head, None, "the expected head hash is not in the chain")
    if expect_count is not None and checked < expect_count:
        return VerifyResult(False, checked, head, None, f"{checked} rows, fewer than the expected {expect_count}")
    return VerifyResult(True, checked, head)


@dataclass(frozen=True)
class Head:
    count: int
    head: str


async def current_head(engine: AsyncEngine) -> Head:
    """The sealed head (no chain walk): what the periodic export publishes."""
    async with engine.connect() as conn:
        seal = _parse_seal(await get_value(conn, HEAD_SEAL))
    return Head(seal[0], seal[1]) if seal else Head(0, GENESIS)


class AuditKeyStore:
    """The chain key as a secret store: `rotate-keys` re-wraps it like any other secret."""

    name = "audit chain key"

    def __init__(self, engine: AsyncEngine, keys: MasterKeys) -> None:
        self.engine, self.keys = engine, keys

    async def seal_plaintext(self) -> int:
        return 0  # the chain key is never stored in plaintext

    async def rewrap(self) -> tuple[int, int]:
        """(re-wrapped, unchanged)."""
        keyring = self.keys.keyring()
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await _lock(conn)
                stored = await get_value(conn, CHAIN_KEY)
                if stored is None or not keyring.needs_rewrap(stored):
                    return 0, int(stored is not None)
                await set_value(conn, CHAIN_KEY, keyring.rewrap(stored))
                return 1, 0
        finally:
            await conn.close()

    async def key_ids_in_use(self) -> set[str]:
        async with self.engine.connect() as conn:
            stored = await get_value(conn, CHAIN_KEY)
        return {self.keys.keyring().key_id_of(stored)} if stored else set()
