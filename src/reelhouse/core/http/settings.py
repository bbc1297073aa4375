"""Settings of the HTTP layer itself: body limits, the access log, what anonymous callers may read
and how often the values behind `/metrics` and `/status` are refreshed."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from reelhouse.config import Duration, SettingsSection, from_env


class HttpSettings(SettingsSection):
    max_request_body_bytes: int = Field(1 << 20, gt=0, validation_alias=from_env("MAX_REQUEST_BODY_BYTES"))
    """Largest request body in bytes outside upload routes (which have their own, e.g. MAX_UPLOAD_BYTES)."""
    access_log: bool = Field(False, validation_alias=from_env("ACCESS_LOG"))
    """One log line per request: method, route, status, duration, corr."""
    require_auth_for_reads: bool = Field(False, validation_alias=from_env("REQUIRE_AUTH_FOR_READS"))
    """/status, /metrics and the VOD list need credentials (any role) instead of being public."""
    metrics_refresh_interval: Duration = Field(
        timedelta(seconds=15), validation_alias=from_env("METRICS_REFRESH_INTERVAL")
    )
    """How often the database-derived values of /metrics and /status are refreshed in the
    background; scrapes read the cached values. 0 refreshes on each read (tests)."""
    metrics_addr: str = Field("", validation_alias=from_env("METRICS_ADDR"))
    """host:port where `reelhouse worker` serves /metrics (its task, download and mail counters);
    empty: none. The API serves /metrics on its own port."""
    audit_head_export_interval: Duration = Field(
        timedelta(hours=1), validation_alias=from_env("AUDIT_HEAD_EXPORT_INTERVAL")
    )
    """How often the audit chain's head hash and row count are logged and exported as metrics."""
