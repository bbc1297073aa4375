# Over 400 lines: create, restore and verify share one manifest format and both databases' snapshot code.
"""`create`, `restore` and `verify`: one archive per backup, described by its manifest.

An archive is a gzip'd tar holding `manifest.json` and the database snapshot
(`database.sqlite3` or `database.pgdump`). The manifest records the database kind and schema
heads, each table's row count and checksum, the snapshot's SHA-256, the storage objects with
their sizes and SHA-256 (the media itself stays in storage and is backed up there: the manifest
lets a restore say what is missing), and the id of the master key the secrets in the database
are encrypted with. The key itself is never in a backup: keep it apart from the backups."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import shutil
import sqlite3
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from reelhouse.config import Settings
from reelhouse.core.backup import database as db
from reelhouse.core.backup.database import BackupError, PostgresTarget, TableStats
from reelhouse.core.backup.settings import BackupSettings

log = logging.getLogger("reelhouse.backup")

FORMAT = "reelhouse-backup/1"
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite3"
POSTGRES_MEMBER = "database.pgdump"
MAX_MANIFEST_BYTES = 256 << 20
KEY_REMINDER = (
    "This backup does not contain the master key. Secrets in the database (OAuth tokens, stored "
    "credentials) can be read only with the key whose id is master_key.key_id: keep "
    "MASTER_ENCRYPTION_KEY or DATA_DIR/master.key in a separate, safe place."
)
Progress = Callable[[str], None]


def _noop(_message: str) -> None:
    return None


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    uploaded_key: str | None = None


@dataclass
class CheckReport:
    """What a restore or verify compared, and what differed (empty `problems`: all good)."""

    tables: int = 0
    rows: int = 0
    objects_checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tables": self.tables,
            "rows": self.rows,
            "objects_checked": self.objects_checked,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def database_kind(settings: Settings) -> str:
    return "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reelhouse_version() -> str:
    try:
        return version("reelhouse")
    except PackageNotFoundError:
        return "unknown"


def _schema_heads_sqlite(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(row[0] for row in conn.execute("SELECT version_num FROM alembic_version"))
    except sqlite3.DatabaseError:
        return []
    finally:
        conn.close()


def master_key_id(settings: Settings) -> str | None:
    from reelhouse.core.security.keys import MasterKeys

    keys = MasterKeys.from_settings(settings)
    if keys.uses_key_file and not keys.key_file.exists():
        return None  # no secret was ever stored under a key; do not create one here
    return keys.keyring().primary_id


def master_key_ids(settings: Settings) -> list[str]:
    from reelhouse.core.security.keys import MasterKeys

    keys = MasterKeys.from_settings(settings)
    if keys.uses_key_file and not keys.key_file.exists():
        return []
    return keys.keyring().key_ids


# ---- storage manifest --------------------------------------------------------------------


async def storage_manifest(settings: Settings, exclude_prefix: str) -> dict[str, Any]:
    from reelhouse.core.storage import open_storage

    storage = open_storage(settings)
    try:
        objects: list[dict[str, Any]] = []
        async with aclosing(storage.list("")) as listing:
            async for info in listing:
                if exclude_prefix and info.key.startswith(exclude_prefix):
                    continue
                digest = hashlib.sha256()
                async with aclosing(storage.get(info.key)) as chunks:
                    async for chunk in chunks:
                        digest.update(chunk)
                objects.append({"key": info.key, "size": info.size, "sha256": digest.hexdigest()})
        objects.sort(key=lambda o: str(o["key"]))
        return {
            "backend": storage.name,
            "count": len(objects),
            "bytes": sum(o["size"] for o in objects),
            "objects": objects,
        }
    finally:
        await storage.aclose()


async def check_storage(settings: Settings, manifest: dict[str, Any], report: CheckReport) -> None:
    """Every object the manifest lists is in storage with the same size and SHA-256."""
    from reelhouse.core.storage import ObjectNotFound, StorageError, open_storage

    listed = (manifest.get("storage") or {}).get("objects") or []
    if not listed:
        return
    storage = open_storage(settings)
    missing = changed = 0
    try:
        for entry in listed:
            key = entry["key"]
            digest = hashlib.sha256()
            size = 0
            try:
                async with aclosing(storage.get(key)) as chunks:
                    async for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
            except ObjectNotFound:
                missing += 1
                if missing <= 20:
                    report.problems.append(f"storage object missing: {key}")
                continue
            except StorageError as exc:
                report.problems.append(f"storage object unreadable: {key}: {exc}")
                continue
            report.objects_checked += 1
            if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
                changed += 1
                if changed <= 20:
                    report.problems.append(f"storage object differs from the backup: {key}")
    finally:
        await storage.aclose()
    if missing > 20 or changed > 20:
        report.problems.append(f"{missing} storage objects missing, {changed} changed in all")


# ---- create ------------------------------------------------------------------------------


def _backup_name(kind: str, now: datetime) -> str:
    return f"reelhouse-{kind}-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.tar.gz"


async def create_backup(
    settings: Settings,
    *,
    output: Path | None = None,
    upload: bool | None = None,
    include_storage: bool | None = None,
    progress: Progress = _noop,
) -> BackupResult:
    """Snapshot the database, list storage, write the archive; upload it when asked."""
    conf = settings.section(BackupSettings)
    kind = database_kind(settings)
    now = datetime.now(UTC)
    name = _backup_name(kind, now)
    if output is None:
        target_path = conf.directory(settings.server.data_dir) / name
    elif output.is_dir() or str(output).endswith("/"):
        target_path = output / name
    else:
        target_path = output
    target_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reelhouse-backup-", dir=target_path.parent) as scratch:
        work = Path(scratch)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "created_at": now.isoformat(),
            "reelhouse_version": _reelhouse_version(),
            "master_key": {"key_id": master_key_id(settings), "included": False, "reminder": KEY_REMINDER},
        }
        progress(f"snapshotting the database ({settings.database_label()})")
        if kind == "sqlite":
            live = settings.sqlite_path()
            if live is None:
                raise BackupError("an in-memory SQLite database cannot be backed up")
            snap = work / SQLITE_MEMBER
            await asyncio.to_thread(db.sqlite_snapshot, live, snap)
            stats = await asyncio.to_thread(db.sqlite_stats, snap)
            heads = await asyncio.to_thread(_schema_heads_sqlite, snap)
            server_version = sqlite3.sqlite_version
        else:
            snap = work / POSTGRES_MEMBER
            target = PostgresTarget.from_url(settings.database_url)
            stats, server_version = await db.postgres_snapshot(target, conf.pg_dump_path, snap)
            heads = await _postgres_heads(target)
        manifest["database"] = {
            "kind": kind,
            "member": snap.name,
            "sha256": await asyncio.to_thread(_sha256_file, snap),
            "size": snap.stat().st_size,
            "server_version": server_version,
            "schema_heads": heads,
        }
        manifest["tables"] = {table: s.as_dict() for table, s in stats.items()}
        manifest["totals"] = {"tables": len(stats), "rows": sum(s.rows for s in stats.values())}
        want_storage = conf.backup_storage_manifest if include_storage is None else include_storage
        if want_storage:
            progress("listing storage objects and their checksums")
            manifest["storage"] = await storage_manifest(settings, conf.prefix())
        partial = work / "archive.partial"
        await asyncio.to_thread(_write_archive, partial, manifest, snap)
        partial.replace(target_path)
    result = BackupResult(target_path, manifest)
    if conf.backup_upload if upload is None else upload:
        result.uploaded_key = await upload_backup(settings, target_path)
        progress(f"uploaded to storage as {result.uploaded_key}")
    log.info(
        "backup created",
        extra={
            "component": "backup",
            "path": str(target_path),
            "tables": manifest["totals"]["tables"],
            "rows": manifest["totals"]["rows"],
        },
    )
    return result


async def _postgres_heads(target: PostgresTarget) -> list[str]:
    conn = await target.connect()
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
        return sorted(r["version_num"] for r in rows)
    except Exception:
        return []
    finally:
        await conn.close()


def _write_archive(path: Path, manifest: dict[str, Any], snapshot: Path) -> None:
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    with tarfile.open(path, "w:gz", compresslevel=6) as archive:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        info.mtime = int(datetime.now(UTC).timestamp())
        archive.addfile(info, io.BytesIO(body))
        archive.add(snapshot, arcname=snapshot.name)


async def upload_backup(settings: Settings, path: Path) -> str:
    from reelhouse.core.storage import StorageError, open_storage

    conf = settings.section(BackupSettings)
    key = conf.prefix() + path.name
    storage = open_storage(settings)
    try:
        await storage.put(key, path)
    except StorageError as exc:
        raise BackupError(f"upload of {path.name} failed: {exc}") from None
    finally:
        await storage.aclose()
    return key


# ---- reading archives --------------------------------------------------------------------


def open_archive(path: Path, into: Path) -> dict[str, Any]:
    """Check `path` is a reelhouse backup, extract its database member into `into` and return
    the manifest; BackupError with a clear reason otherwise."""
    if not path.exists():
        raise BackupError(f"no backup file at {path}")
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    try:
        with tarfile.open(path, "r:*") as archive:
            try:
                member = archive.getmember(MANIFEST)
            except KeyError:
                raise BackupError(f"{path.name} is not a reelhouse backup (no {MANIFEST})") from None
            if not member.isfile() or member.size > MAX_MANIFEST_BYTES:
                raise BackupError(f"{path.name}: {MANIFEST} is not a plain file of sensible size")
            handle = archive.extractfile(member)
            assert handle is not None
            try:
                manifest = json.loads(handle.read())
            except ValueError as exc:
                raise BackupError(f"{path.name}: {MANIFEST} is not valid JSON ({exc})") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise BackupError(f"{path.name}: unknown backup format {manifest.get('format')!r}")
            name = (manifest.get("database") or {}).get("member")
            if name not in (SQLITE_MEMBER, POSTGRES_MEMBER):
                raise BackupError(f"{path.name}: the manifest names no database snapshot")
            try:
                snap = archive.getmember(name)
            except KeyError:
                raise BackupError(f"{path.name} lacks its database snapshot {name}") from None
            if not snap.isfile():
                raise BackupError(f"{path.name}: {name} is not a plain file")
            source = archive.extractfile(snap)
            assert source is not None
            with open(into / name, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:  # gzip errors are OSError
        raise BackupError(f"{path.name} is not a readable backup archive (corrupt or truncated): {exc}") from None
    digest = _sha256_file(into / name)
    if digest != manifest["database"].get("sha256"):
        raise BackupError(f"{path.name}: the database snapshot's checksum does not match the manifest (corrupt)")
    return manifest


def compare_tables(expected: dict[str, Any], found: dict[str, TableStats], report: CheckReport) -> None:
    for table, want in sorted(expected.items()):
        got = found.get(table)
        if got is None:
            report.problems.append(f"table {table} is missing after the restore")
            continue
        report.tables += 1
        report.rows += got.rows
        if got.rows != want["rows"]:
            report.problems.append(f"table {table}: {got.rows} rows, the backup has {want['rows']}")
        elif got.checksum != want["checksum"]:
            report.problems.append(f"table {table}: checksum differs from the backup's")


def _check_kind(manifest: dict[str, Any], settings: Settings) -> str:
    kind = manifest["database"]["kind"]
    current = database_kind(settings)
    if kind != current:
        names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
        raise BackupError(
            f"this backup is of a {names.get(kind, kind)} database but DATABASE_URL names "
            f"{names[current]} ({settings.database_label()}); restore it into a {names.get(kind, kind)} database"
        )
    return str(kind)


def _key_warning(manifest: dict[str, Any], settings: Settings, report: CheckReport) -> None:
    wanted = (manifest.get("master_key") or {}).get("key_id")
    if wanted and wanted not in master_key_ids(settings):
        report.warnings.append(
            f"the backup's secrets are encrypted with master key id {wanted}, which is not configured: "
            "set MASTER_ENCRYPTION_KEY (or restore DATA_DIR/master.key) before starting reelhouse"
        )


# ---- restore -----------------------------------------------------------------------------


async def restore_backup(settings: Settings, archive: Path, *, progress: Progress = _noop) -> CheckReport:
    """Replace the configured database with the backup's, then compare it with the manifest
    (tables, rows, checksums) and storage with the storage manifest."""
    conf = settings.section(BackupSettings)
    report = CheckReport()
    with tempfile.TemporaryDirectory(prefix="reelhouse-restore-") as scratch:
        work = Path(scratch)
        manifest = await asyncio.to_thread(open_archive, archive, work)
        kind = _check_kind(manifest, settings)
        snap = work / manifest["database"]["member"]
        progress(f"restoring into {settings.database_label()}")
        if kind == "sqlite":
            live = settings.sqlite_path()
            if live is None:
                raise BackupError("cannot restore into an in-memory SQLite database")
            await asyncio.to_thread(db.sqlite_check, snap)
            await asyncio.to_thread(db.sqlite_restore, snap, live)
            found = await asyncio.to_thread(db.sqlite_stats, live)
        else:
            target = PostgresTarget.from_url(settings.database_url)
            await db.postgres_restore(target, conf.pg_restore_path, snap)
            found = await db.postgres_target_stats(target)
    compare_tables(manifest["tables"], found, report)
    progress("checking storage objects against the manifest")
    await check_storage(settings, manifest, report)
    _key_warning(manifest, settings, report)
    return report


# ---- verify ------------------------------------------------------------------------------


async def verify_backup(settings: Settings, archive: Path, *, check_objects: bool = True) -> CheckReport:
    """Seed 001's restore test: restore into a scratch database (a temporary SQLite file, or a
    new PostgreSQL database on the configured server, dropped afterwards), compare counts and
    checksums with the manifest, and check storage against the storage manifest."""
    conf = settings.section(BackupSettings)
    report = CheckReport()
    with tempfile.TemporaryDirectory(prefix="reelhouse-verify-") as scratch:
        work = Path(scratch)
        manifest = await asyncio.to_thread(open_archive, archive, work)
        kind = manifest["database"]["kind"]
        snap = work / manifest["database"]["member"]
        if kind == "sqlite":
            await asyncio.to_thread(db.sqlite_check, snap)
            restored = work / "restore-test.sqlite3"
            await asyncio.to_thread(db.sqlite_restore, snap, restored)
            found = await asyncio.to_thread(db.sqlite_stats, restored)
        elif kind == "postgresql":
            if database_kind(settings) != "postgresql":
                raise BackupError(
                    "verifying a PostgreSQL backup needs a PostgreSQL server for the scratch database: "
                    "set DATABASE_URL to one (the backup is restored into a new database there, then dropped)"
                )
            server = PostgresTarget.from_url(settings.database_url)
            scratch_name = f"reelhouse_restore_test_{uuid.uuid4().hex[:10]}"
            await db.create_scratch_database(server, scratch_name)
            try:
                target = server.with_database(scratch_name)
                await db.postgres_restore(target, conf.pg_restore_path, snap)
                found = await db.postgres_target_stats(target)
            finally:
                await db.drop_scratch_database(server, scratch_name)
        else:
            raise BackupError(f"unknown database kind {kind!r} in the manifest")
    compare_tables(manifest["tables"], found, report)
    if check_objects:
        await check_storage(settings, manifest, report)
    _key_warning(manifest, settings, report)
    return report


async def latest_backup(settings: Settings, into: Path) -> Path | None:
    """The newest backup in BACKUP_DIR, or in storage under BACKUP_PREFIX when uploads are on
    (downloaded into `into`); None when there is none."""
    conf = settings.section(BackupSettings)
    local = sorted(conf.directory(settings.server.data_dir).glob("reelhouse-*.tar.gz"), key=lambda p: p.name[-28:])
    candidates: list[tuple[str, Path | str]] = [(_stamp(p.name), p) for p in local]
    if conf.backup_upload:
        from reelhouse.core.storage import open_storage

        storage = open_storage(settings)
        try:
            async with aclosing(storage.list(conf.prefix())) as listing:
                async for info in listing:
                    leaf = info.key.rsplit("/", 1)[-1]
                    if leaf.startswith("reelhouse-") and leaf.endswith(".tar.gz"):
                        candidates.append((_stamp(leaf), info.key))
            if not candidates:
                return None
            _, newest = max(candidates, key=lambda c: c[0])
            if isinstance(newest, str):
                path = into / newest.rsplit("/", 1)[-1]
                with open(path, "wb") as out:
                    async with aclosing(storage.get(newest)) as chunks:
                        async for chunk in chunks:
                            out.write(chunk)
                return path
            return newest
        finally:
            await storage.aclose()
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]  # type: ignore[return-value]


def _stamp(name: str) -> str:
    # reelhouse-<kind>-<YYYYmmddTHHMMSS>-<rand>.tar.gz: the timestamp orders backups
    parts = name.removesuffix(".tar.gz").split("-")
    return parts[-2] if len(parts) >= 4 else ""
