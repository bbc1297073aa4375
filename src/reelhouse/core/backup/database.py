"""Database snapshots for backups: a consistent copy plus per-table row counts and checksums,
computed from that same snapshot, and the way back.

SQLite: the online backup API copies the live file in one step (`pages=-1`) under a read
transaction, so writers go on (WAL) and the copy is one consistent state; the counts come from
the copy itself. Restoring also goes through the backup API, into the live file, so a process
that has it open sees the old or the new database, never a mix.

PostgreSQL: a REPEATABLE READ transaction exports its snapshot, `pg_dump --snapshot` dumps
exactly that state while the same transaction computes the counts, so both describe one moment
whatever is written meanwhile. `pg_restore` loads a dump in one transaction.

A table's checksum is order-independent (the sum of its rows' SHA-256 digests modulo 2^256),
so it streams in bounded memory and needs no ORDER BY (json columns have no ordering)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

_MOD = 1 << 256


class BackupError(Exception):
    """A backup, restore or verify that cannot go on; the message says why, for people."""


@dataclass(frozen=True)
class TableStats:
    rows: int
    checksum: str

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "checksum": self.checksum}


def _canonical(value: Any) -> bytes:
    if value is None:
        return b"\x00"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"b" + bytes(value).hex().encode()
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, (datetime, date, time)):
        return b"d" + value.isoformat().encode()
    if isinstance(value, (int, float, Decimal)):
        return b"n" + repr(value).encode()
    return b"s" + str(value).encode("utf-8", "surrogatepass")


class _Accumulator:
    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def add(self, row: Iterable[Any]) -> None:
        digest = hashlib.sha256()
        for value in row:
            part = _canonical(value)
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        self.total = (self.total + int.from_bytes(digest.digest(), "big")) % _MOD
        self.rows += 1

    def stats(self) -> TableStats:
        return TableStats(self.rows, f"{self.total:064x}")


# ---- SQLite ------------------------------------------------------------------------------


def sqlite_snapshot(source: Path, target: Path) -> None:
    """Copy the live database at `source` into a new file `target` (online backup API)."""
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    dst = sqlite3.connect(target)
    try:
        src.execute("PRAGMA busy_timeout=60000")
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc}") from None
    finally:
        dst.close()
        src.close()


def sqlite_check(path: Path) -> None:
    """Fail unless `path` is an intact SQLite database."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path.name} is not a usable SQLite database: {exc}") from None
    if not result or result[0] != "ok":
        raise BackupError(f"{path.name} fails SQLite's integrity check: {result[0] if result else '?'}")


def sqlite_stats(path: Path) -> dict[str, TableStats]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        found = {}
        for name in names:
            acc = _Accumulator()
            quoted = name.replace('"', '""')
            for row in conn.execute(f'SELECT * FROM "{quoted}"'):
                acc.add(row)
            found[name] = acc.stats()
        return found
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot read {path.name}: {exc}") from None
    finally:
        conn.close()


def sqlite_restore(snapshot: Path, live: Path) -> None:
    """Write `snapshot` over the database at `live` through the backup API (creating it when
    it is gone), so open connections elsewhere keep working on a consistent file."""
    live.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    dst = sqlite3.connect(live, timeout=60)
    try:
        dst.execute("PRAGMA busy_timeout=60000")
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise BackupError(f"restoring into {live} failed: {exc}") from None
    finally:
        dst.close()
        src.close()


# ---- PostgreSQL --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresTarget:
    """Connection details of a PostgreSQL database, for asyncpg and the libpq tools."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def from_url(cls, url: str) -> PostgresTarget:
        parsed = make_url(url)
        return cls(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 5432,
            user=parsed.username or os.environ.get("PGUSER", "postgres"),
            password=parsed.password or "",
            database=parsed.database or "postgres",
        )

    def with_database(self, name: str) -> PostgresTarget:
        return PostgresTarget(self.host, self.port, self.user, self.password, name)

    async def connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or None,
                database=self.database,
                timeout=15,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise BackupError(f"cannot connect to PostgreSQL database {self.database!r}: {exc}") from None

    def tool_args(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--username", self.user, "--no-password"]

    def tool_env(self) -> dict[str, str]:
        # The password goes in the environment, never on a command line (ps shows those).
        env = {**os.environ}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def _major(version_text: str) -> int:
    found = re.search(r"(\d+)(?:\.\d+)?", version_text)
    if not found:
        raise BackupError(f"cannot read a version from {version_text[:80]!r}")
    return int(found.group(1))


async def check_client_version(tool: str, conn: asyncpg.Connection) -> str:
    """The tool's version line; fails when its major version is older than the server's (an
    older pg_dump refuses a newer server, and an older pg_restore cannot read newer dumps)."""
    try:
        out = await asyncio.to_thread(
            subprocess.run, [tool, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise BackupError(
            f"{tool} is not installed (Debian: postgresql-client); set PG_DUMP_PATH / PG_RESTORE_PATH"
        ) from None
    version_line = out.stdout.strip()
    server_num = int(await conn.fetchval("SHOW server_version_num"))
    server_major = server_num // 10000
    client_major = _major(version_line.rsplit(" ", 1)[-1] if version_line else "")
    if client_major < server_major:
        raise BackupError(
            f"{tool} is version {client_major} but the server runs PostgreSQL {server_major}: "
            f"install postgresql-client-{server_major} (or newer) and point PG_DUMP_PATH/PG_RESTORE_PATH at it"
        )
    return version_line


async def postgres_stats(conn: asyncpg.Connection) -> dict[str, TableStats]:
    """Counts and checksums of the tables of the current schema, in the connection's open
    transaction (call it inside one: cursors need it)."""
    names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")
    found = {}
    for record in names:
        name = record["tablename"]
        acc = _Accumulator()
        quoted = name.replace('"', '""')
        async for row in conn.cursor(f'SELECT * FROM "{quoted}"', prefetch=1000):
            acc.add(row.values())
        found[name] = acc.stats()
    return found


async def postgres_snapshot(target: PostgresTarget, pg_dump: str, out: Path) -> tuple[dict[str, TableStats], str]:
    """Dump the database to `out` (custom format) and compute its table stats, both from one
    exported snapshot. Returns the stats and the server's version."""
    conn = await target.connect()
    try:
        await check_client_version(pg_dump, conn)
        server_version = str(await conn.fetchval("SHOW server_version"))
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        try:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            dump = await asyncio.create_subprocess_exec(
                pg_dump,
                *target.tool_args(),
                "--format=custom",
                f"--snapshot={snapshot}",
                "--file",
                str(out),
                "--dbname",
                target.database,
                env=target.tool_env(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                stats = await postgres_stats(conn)
            finally:
                _, stderr = await dump.communicate()
            if dump.returncode != 0:
                raise BackupError(f"pg_dump failed ({dump.returncode}): {stderr.decode(errors='replace')[-800:]}")
        finally:
            await transaction.rollback()
        return stats, server_version
    finally:
        await conn.close()


async def postgres_restore(target: PostgresTarget, pg_restore: str, dump: Path) -> None:
    """Load `dump` into `target` in one transaction, replacing the objects it contains."""
    conn = await target.connect()
    try:
        await check_client_version(pg_restore, conn)
    finally:
        await conn.close()
    process = await asyncio.create_subprocess_exec(
        pg_restore,
        *target.tool_args(),
        "--clean",
        "--if-exists",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        "--dbname",
        target.database,
        str(dump),
        env=target.tool_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise BackupError(f"pg_restore failed ({process.returncode}): {stderr.decode(errors='replace')[-800:]}")


async def postgres_target_stats(target: PostgresTarget) -> dict[str, TableStats]:
    conn = await target.connect()
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await postgres_stats(conn)
    finally:
        await conn.close()


async def create_scratch_database(target: PostgresTarget, name: str) -> None:
    conn = await target.connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise BackupError(
            f"cannot create the scratch database {name!r} for the restore test ({exc}); "
            "the database user needs CREATEDB"
        ) from None
    finally:
        await conn.close()


async def drop_scratch_database(target: PostgresTarget, name: str) -> None:
    conn = await target.connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
