"""Backup settings (read with `settings.section(BackupSettings)`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field

from reelhouse.config import Duration, SettingsSection, from_env


class BackupSettings(SettingsSection):
    """Where `reelhouse backup create` writes, whether it uploads, and the periodic jobs.

    `BACKUP_DIR` empty means `DATA_DIR/backups`. `BACKUP_INTERVAL` 0 (the default) leaves the
    periodic backup off (an external cron or CronJob runs `reelhouse backup create`);
    `BACKUP_VERIFY_INTERVAL` is seed 001's monthly restore test, 0 turns it off."""

    backup_dir: str = Field("", validation_alias=from_env("BACKUP_DIR"))
    backup_upload: bool = Field(False, validation_alias=from_env("BACKUP_UPLOAD"))
    backup_prefix: str = Field("backups/", max_length=200, validation_alias=from_env("BACKUP_PREFIX"))
    backup_storage_manifest: bool = Field(True, validation_alias=from_env("BACKUP_STORAGE_MANIFEST"))
    backup_interval: Duration = Field(timedelta(0), validation_alias=from_env("BACKUP_INTERVAL"))
    backup_verify_interval: Duration = Field(timedelta(days=30), validation_alias=from_env("BACKUP_VERIFY_INTERVAL"))
    backup_keep: int = Field(30, ge=1, le=10_000, validation_alias=from_env("BACKUP_KEEP"))
    pg_dump_path: str = Field("pg_dump", validation_alias=from_env("PG_DUMP_PATH"))
    pg_restore_path: str = Field("pg_restore", validation_alias=from_env("PG_RESTORE_PATH"))

    def directory(self, data_dir: Path) -> Path:
        return Path(self.backup_dir).expanduser() if self.backup_dir else data_dir / "backups"

    def prefix(self) -> str:
        prefix = self.backup_prefix.strip("/")
        return f"{prefix}/" if prefix else ""
