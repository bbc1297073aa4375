"""Job engine settings that live with the engine (read with `settings.section(...)`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from reelhouse.config import Duration, SettingsSection, from_env


class RetentionSettings(SettingsSection):
    """How long finished work is kept. Durations are Go-style (`336h`, `90m`, `30s`)."""

    job_retention: Duration = Field(timedelta(days=14), validation_alias=from_env("JOB_RETENTION"))
    job_retention_failed: Duration = Field(timedelta(days=90), validation_alias=from_env("JOB_RETENTION_FAILED"))
    job_retention_idle: Duration = Field(timedelta(hours=1), validation_alias=from_env("JOB_RETENTION_IDLE"))
    prune_interval: Duration = Field(timedelta(minutes=10), validation_alias=from_env("JOB_PRUNE_INTERVAL"))
    prune_batch: int = Field(500, ge=1, le=10_000, validation_alias=from_env("JOB_PRUNE_BATCH"))
