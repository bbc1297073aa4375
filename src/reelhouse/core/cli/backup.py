"""`reelhouse backup create|restore|verify|latest`.

Every failure (missing file, corrupt archive, a backup of the other database kind, pg_dump
older than the server) prints one line on stderr and exits non-zero, without a traceback."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer

from reelhouse.core.cli.common import console, err, fail, load_settings, print_json

backup_app = typer.Typer(help="Database backups: create, restore, verify (restore test).", no_args_is_help=True)
T = TypeVar("T")


def _run(action: Callable[[], Coroutine[Any, Any, T]]) -> T:
    from reelhouse.core.backup.database import BackupError
    from reelhouse.core.storage import StorageError

    try:
        return asyncio.run(action())
    except (BackupError, StorageError) as exc:
        raise fail(f"backup: {exc}"[:2000], 1) from None
    except OSError as exc:
        raise fail(f"backup: {type(exc).__name__}: {exc}"[:2000], 1) from None


def _report(report: Any, as_json: bool, what: str) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        for warning in report.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}")
        for problem in report.problems:
            err.print(f"[red]{problem}[/red]")
        if report.ok:
            console.print(
                f"{what} OK: {report.tables} tables, {report.rows} rows, {report.objects_checked} storage objects match"
            )
    if not report.ok:
        raise fail(f"{what} FAILED: {len(report.problems)} differences", 1)


@backup_app.command("create")
def create(
    output: Path | None = typer.Option(None, "--output", "-o", help="File or directory (default BACKUP_DIR)"),
    upload: bool | None = typer.Option(None, "--upload/--no-upload", help="Also store it under BACKUP_PREFIX"),
    storage: bool | None = typer.Option(None, "--storage/--no-storage", help="Include the storage manifest"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON"),
) -> None:
    """Snapshot the database (consistent while reelhouse runs) with a manifest of tables and storage objects."""
    from reelhouse.core.backup.service import KEY_REMINDER, create_backup

    settings = load_settings()
    err.print(f"[dim]database: {settings.database_label()}[/dim]")
    result = _run(
        lambda: create_backup(
            settings,
            output=output,
            upload=upload,
            include_storage=storage,
            progress=lambda m: err.print(f"[dim]{m}[/dim]"),
        )
    )
    manifest = result.manifest
    summary = {
        "path": str(result.path),
        "uploaded": result.uploaded_key,
        "database": manifest["database"]["kind"],
        "tables": manifest["totals"]["tables"],
        "rows": manifest["totals"]["rows"],
        "storage_objects": (manifest.get("storage") or {}).get("count"),
        "master_key_id": manifest["master_key"]["key_id"],
    }
    if as_json:
        print_json(summary)
    else:
        console.print(f"backup written: {result.path}")
        console.print(
            f"{summary['tables']} tables, {summary['rows']} rows, {summary['storage_objects'] or 0} storage objects"
        )
        if result.uploaded_key:
            console.print(f"uploaded: {result.uploaded_key}")
    err.print(f"[yellow]reminder:[/yellow] {KEY_REMINDER} (key id {summary['master_key_id'] or 'none yet'})")


@backup_app.command("restore")
def restore(
    archive: Path = typer.Argument(..., help="A backup written by `reelhouse backup create`"),
    yes: bool = typer.Option(False, "--yes", help="Replace the configured database without asking"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Replace the configured database with the backup's, then check it against the manifest."""
    from reelhouse.core.backup.service import restore_backup

    settings = load_settings()
    label = settings.database_label()
    if not archive.is_file():
        raise fail(f"backup: no backup file at {archive}", 1)
    if not yes and not typer.confirm(f"replace {label} with {archive.name}?", default=False):
        raise fail("restore cancelled", 1)
    err.print(f"[dim]database: {label}[/dim]")
    report = _run(lambda: restore_backup(settings, archive, progress=lambda m: err.print(f"[dim]{m}[/dim]")))
    _report(report, as_json, "restore")
    if not as_json:
        console.print("run `reelhouse migrate` if this reelhouse is newer than the backup, then start it")


@backup_app.command("verify")
def verify(
    archive: Path | None = typer.Argument(None, help="A backup file; the newest one when omitted"),
    objects: bool = typer.Option(True, "--objects/--no-objects", help="Also check storage objects' checksums"),
    record: bool = typer.Option(False, "--record", help="Store the result for the last-good-restore metric"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore test: restore into a scratch database and compare row counts and checksums."""
    from reelhouse.core.backup.service import latest_backup, verify_backup

    settings = load_settings()

    async def run() -> Any:
        with tempfile.TemporaryDirectory(prefix="reelhouse-verify-dl-") as scratch:
            path = archive or await latest_backup(settings, Path(scratch))
            if path is None:
                raise fail("backup: no backup found in BACKUP_DIR (or under BACKUP_PREFIX in storage)", 1)
            err.print(f"[dim]verifying {path}[/dim]")
            report = await verify_backup(settings, path, check_objects=objects)
        if record:
            await _record(settings, report.ok)
        return report

    _report(_run(run), as_json, "verify")


async def _record(settings: Any, ok: bool) -> None:
    from reelhouse.core.backup.jobs import record_verify
    from reelhouse.core.db.engine import create_engine
    from reelhouse.core.jobs.kv import KV

    engine = create_engine(settings.database_url)
    try:
        await record_verify(KV(engine), ok)
    finally:
        await engine.dispose()


@backup_app.command("latest")
def latest() -> None:
    """Print the newest backup file (BACKUP_DIR, or storage when BACKUP_UPLOAD is on)."""
    from reelhouse.core.backup.service import latest_backup

    settings = load_settings()
    download = Path(tempfile.mkdtemp(prefix="reelhouse-latest-"))

    async def run() -> Path | None:
        return await latest_backup(settings, download)

    found = _run(run)
    if found is None:
        raise fail("no backup found", 1)
    # Plain print: the console wraps long lines, and this line is read by `$(...)` in scripts.
    print(found)
