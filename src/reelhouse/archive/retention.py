"""Disk housekeeping: the retention policy for downloaded VODs and the stale temp-file sweeper.

Retention (per channel, only when RETENTION_KEEP_DAYS or RETENTION_KEEP_COUNT is set) keeps
the union of: VODs newer than KEEP_DAYS, the KEEP_COUNT newest, VODs not processed yet (their
upload still needs the file), and every VOD whose job has a queued or running task. Everything
else with a `downloaded_path` loses its file, and the path is cleared. Guards vod-tender lacked:
- "in use" is read from the task queue, not from `download_state` strings the code never wrote;
- a path is deleted only if it resolves inside `DATA_DIR/<that VOD's channel>/`, so one
  channel's policy can never delete another channel's file (vod-tender's orphan sweeper did).
The temp sweeper removes yt-dlp/ffmpeg leftovers (`.part`, `.part-FragN`, `.ytdl`, `.tmp`,
`.lock`, encode staging files) older than DATA_CLEANUP_MAX_AGE, unless their VOD is being
downloaded or uploaded right now. RETENTION_DRY_RUN only reports.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reelhouse.archive.kinds import FILE_TASKS
from reelhouse.archive.services import channel_directory
from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.store import VodStore
from reelhouse.core.db.types import utcnow

log = logging.getLogger("reelhouse.archive.retention")

# Files the download/upload path creates next to `twitch_<id>.mp4`.
_TEMP_NAME = re.compile(
    r"\.?twitch_(?P<id>[A-Za-z0-9_-]+)\.(?:temp\.mp4|(?:transcoded\.)?mp4"
    r"(?:\.(?:part|ytdl|tmp|lock|temp)\S*|\.partial-[0-9a-f]+))$"
)


@dataclass
class RetentionReport:
    dry_run: bool
    deleted: list[str] = field(default_factory=list)  # twitch ids whose file went (or would go)
    kept: int = 0
    missing: int = 0  # rows whose file was already gone: path cleared
    bytes_freed: int = 0
    temp_removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _inside(path: Path, directory: Path) -> bool:
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except OSError:
        return False


def retained_ids(rows: list[Any], settings: ArchiveSettings, active: set[str], now: datetime) -> set[str]:
    keep: set[str] = {r.twitch_vod_id for r in rows if not r.processed or r.twitch_vod_id in active}
    if settings.retention_keep_days > 0:
        cutoff = now - timedelta(days=settings.retention_keep_days)
        keep |= {r.twitch_vod_id for r in rows if (r.date or r.created_at) >= cutoff}
    if settings.retention_keep_count > 0:
        newest = sorted(rows, key=lambda r: r.date or r.created_at, reverse=True)
        keep |= {r.twitch_vod_id for r in newest[: settings.retention_keep_count]}
    return keep


async def apply_retention(
    store: VodStore, data_dir: Path, settings: ArchiveSettings, *, now: datetime | None = None
) -> RetentionReport:
    report = RetentionReport(dry_run=settings.retention_dry_run)
    if settings.retention_keep_days <= 0 and settings.retention_keep_count <= 0:
        return report  # no policy configured: keep everything (vod-tender's default)
    now = now or utcnow()
    active = await store.ids_with_open_work(FILE_TASKS)
    rows = await store.with_files()
    by_channel: dict[str, list[Any]] = {}
    for row in rows:
        by_channel.setdefault(row.channel, []).append(row)
    for channel, channel_rows in sorted(by_channel.items()):
        keep = retained_ids(channel_rows, settings, active, now)
        channel_dir = channel_directory(data_dir, channel)
        for row in sorted(channel_rows, key=lambda r: r.date or r.created_at):
            if row.twitch_vod_id in keep:
                report.kept += 1
                continue
            await _remove_file(store, row, channel_dir, report)
    log.info(
        "retention: %d deleted, %d kept, %d already missing, %d bytes freed%s",
        len(report.deleted),
        report.kept,
        report.missing,
        report.bytes_freed,
        " (dry run)" if report.dry_run else "",
        extra={"component": "retention_cleanup"},
    )
    return report


async def _remove_file(store: VodStore, row: Any, channel_dir: Path, report: RetentionReport) -> None:
    path = Path(row.downloaded_path)
    if not _inside(path, channel_dir):
        report.errors.append(f"{row.twitch_vod_id}: {path} is outside {channel_dir}; not deleted")
        log.error(
            "refusing to delete %s: outside its channel directory %s",
            path,
            channel_dir,
            extra={"component": "retention_cleanup", "vod_id": row.twitch_vod_id},
        )
        return
    if report.dry_run:
        report.deleted.append(row.twitch_vod_id)
        with contextlib.suppress(OSError):
            report.bytes_freed += path.stat().st_size
        return
    try:
        size = path.stat().st_size
        path.unlink()
        report.bytes_freed += size
        report.deleted.append(row.twitch_vod_id)
    except FileNotFoundError:
        report.missing += 1
    except OSError as exc:
        report.errors.append(f"{row.twitch_vod_id}: {exc}")
        return
    await store.clear_path_if(row.twitch_vod_id, row.downloaded_path)


async def sweep_temp_files(
    store: VodStore, data_dir: Path, max_age: timedelta, *, dry_run: bool = False, now: datetime | None = None
) -> list[str]:
    """Remove download/transcode leftovers older than `max_age` whose VOD has no open task."""
    if max_age.total_seconds() <= 0 or not data_dir.is_dir():
        return []
    cutoff = (now or utcnow()).timestamp() - max_age.total_seconds()
    active = await store.ids_with_open_work(FILE_TASKS)
    removed: list[str] = []
    for channel_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for path in sorted(channel_dir.iterdir()):
            match = _TEMP_NAME.match(path.name)
            if match is None or not path.is_file() or match.group("id") in active:
                continue
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
            removed.append(str(path))
    if removed:
        log.info(
            "removed %d stale temporary files%s",
            len(removed),
            " (dry run)" if dry_run else "",
            extra={"component": "retention_cleanup"},
        )
    return removed


async def run_housekeeping(store: VodStore, data_dir: Path, settings: ArchiveSettings) -> RetentionReport:
    report = await apply_retention(store, data_dir, settings)
    report.temp_removed = await sweep_temp_files(
        store, data_dir, settings.data_cleanup_max_age, dry_run=settings.retention_dry_run
    )
    return report


def as_result(report: RetentionReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "deleted": report.deleted,
        "kept": report.kept,
        "missing": report.missing,
        "bytes_freed": report.bytes_freed,
        "temp_removed": len(report.temp_removed),
        "errors": report.errors,
        "at": datetime.now(UTC).isoformat(),
    }
