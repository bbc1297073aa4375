"""The periodic backup jobs: `backup.create` every BACKUP_INTERVAL (off by default) and
`backup.verify` every BACKUP_VERIFY_INTERVAL (seed 001's monthly restore test) on the newest
backup. A passing verify stores its time in `kv`; /metrics shows it as
`reelhouse_backup_last_good_restore_timestamp_seconds` on every node."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelhouse.core.backup.database import BackupError
from reelhouse.core.backup.settings import BackupSettings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.scheduler import PeriodicTask
from reelhouse.core.telemetry.metrics import counter, gauge

if TYPE_CHECKING:
    from reelhouse.core.jobs.context import TaskContext
    from reelhouse.core.runtime import Runtime

CREATE_KIND = "backup.create"
VERIFY_KIND = "backup.verify"
KV_LAST_GOOD_RESTORE = "backup.last_good_restore"
KV_LAST_BACKUP = "backup.last_backup"
KV_LAST_VERIFY_FAILED = "backup.last_verify_failed"

LAST_GOOD_RESTORE = gauge(
    "reelhouse_backup_last_good_restore_timestamp_seconds",
    "Unix time of the last restore test (backup verify) that matched its manifest; 0 when none",
)
LAST_BACKUP = gauge("reelhouse_backup_last_success_timestamp_seconds", "Unix time of the last backup created; 0 none")
LAST_VERIFY_FAILED = gauge("reelhouse_backup_last_verify_failed", "1 when the newest restore test found differences")
VERIFY_RUNS = counter("reelhouse_backup_verify_total", "Restore tests by outcome", ["outcome"])


async def record_verify(runtime_kv: Any, ok: bool) -> None:
    VERIFY_RUNS.labels("ok" if ok else "failed").inc()
    if ok:
        await runtime_kv.set(KV_LAST_GOOD_RESTORE, str(time.time()))
    await runtime_kv.set(KV_LAST_VERIFY_FAILED, "0" if ok else "1")


async def refresh_metrics(runtime: Runtime) -> None:
    values = await runtime.kv.get_many([KV_LAST_GOOD_RESTORE, KV_LAST_BACKUP, KV_LAST_VERIFY_FAILED])
    LAST_GOOD_RESTORE.set(float(values.get(KV_LAST_GOOD_RESTORE) or 0))
    LAST_BACKUP.set(float(values.get(KV_LAST_BACKUP) or 0))
    LAST_VERIFY_FAILED.set(float(values.get(KV_LAST_VERIFY_FAILED) or 0))


def install(runtime: Runtime) -> None:
    from reelhouse.core.backup import service

    conf = runtime.settings.section(BackupSettings)

    async def create_task(ctx: TaskContext) -> dict[str, Any]:
        try:
            result = await service.create_backup(runtime.settings)
        except BackupError as exc:
            raise PermanentError(str(exc)) from None
        await runtime.kv.set(KV_LAST_BACKUP, str(time.time()))
        _prune_local(conf.directory(runtime.settings.server.data_dir), conf.backup_keep)
        return {"path": str(result.path), "rows": result.manifest["totals"]["rows"], "uploaded": result.uploaded_key}

    async def verify_task(ctx: TaskContext) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="reelhouse-verify-dl-") as scratch:
            try:
                archive = await service.latest_backup(runtime.settings, Path(scratch))
                if archive is None:
                    await ctx.mark_idle()
                    return {"verified": None, "reason": "no backup found"}
                report = await service.verify_backup(runtime.settings, archive)
            except BackupError as exc:
                await record_verify(runtime.kv, False)
                raise PermanentError(str(exc)) from None
        await record_verify(runtime.kv, report.ok)
        if not report.ok:
            raise PermanentError(f"restore test of {archive.name} failed: " + "; ".join(report.problems)[:1500])
        return {"verified": archive.name, "at": datetime.now(UTC).isoformat(), **report.as_dict()}

    runtime.registry.register(TaskKind(CREATE_KIND, create_task, max_attempts=2, concurrency_global=1))
    runtime.registry.register(TaskKind(VERIFY_KIND, verify_task, max_attempts=2, concurrency_global=1))
    if conf.backup_interval.total_seconds() > 0:
        runtime.periodic.append(PeriodicTask("backup.create", CREATE_KIND, every=conf.backup_interval))
    if conf.backup_verify_interval.total_seconds() > 0:
        runtime.periodic.append(PeriodicTask("backup.verify", VERIFY_KIND, every=conf.backup_verify_interval))
    runtime.metric_refreshers.append(refresh_metrics)


def _prune_local(directory: Path, keep: int) -> None:
    backups = sorted(directory.glob("reelhouse-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    for old in backups[:-keep]:
        old.unlink(missing_ok=True)
