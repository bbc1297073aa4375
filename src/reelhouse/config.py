"""Configuration: one pydantic-settings tree read from the environment (and `.env`).

Variable names follow the operators' runbooks (vod-tender, WebEncode, LegacyVideo) so an
existing deployment's environment works unchanged. Each section is its own settings class so
a domain can add a section without touching the others; `Settings` bundles them.
An invalid value stops start-up with a `ConfigError` naming the variable.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: Any) -> timedelta:
    """Parse Go-style durations (`600s`, `5m`, `1h30m`) as the runbooks write them; bare numbers are seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)):
        return timedelta(seconds=float(value))
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {value!r} (examples: 30s, 5m, 1h30m)")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def format_duration(value: timedelta) -> str:
    """Render as whole seconds, the way vod-tender's /status shows durations (`"600s"`)."""
    return f"{int(value.total_seconds())}s"


def _comma_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return list(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# NoDecode: pydantic-settings would otherwise parse a list-typed variable as JSON and reject `a,b`.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


class ConfigError(Exception):
    """Raised when the environment holds a value reelhouse cannot use; names the variable."""


class _Section(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class ServerSettings(_Section):
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    http_addr: str = Field("127.0.0.1:8080", validation_alias=_env("HTTP_ADDR"))
    port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("PORT"))
    env: str = Field("", validation_alias=_env("ENV"))
    cors_allowed_origins: CommaList = Field(default_factory=list, validation_alias=_env("CORS_ALLOWED_ORIGINS"))
    public_base_url: str = Field("", validation_alias=_env("PUBLIC_BASE_URL"))
    embedded_worker: bool = Field(True, validation_alias=_env("EMBEDDED_WORKER"))
    gc_gen0_threshold: int = Field(50_000, ge=0, validation_alias=_env("GC_GEN0_THRESHOLD"))

    @property
    def bind(self) -> tuple[str, int]:
        """Host and port to listen on; `PORT` (WebEncode's name) overrides the port of `HTTP_ADDR`."""
        host, _, port_text = self.http_addr.rpartition(":")
        if not port_text.isdigit():
            raise ConfigError(f"HTTP_ADDR: expected host:port, got {self.http_addr!r}")
        return (host or "0.0.0.0"), (self.port or int(port_text))


class DatabaseSettings(_Section):
    database_url: str = Field("", validation_alias=_env("DATABASE_URL", "DB_DSN"))
    pool_size: int = Field(10, ge=1, validation_alias=_env("DB_POOL_SIZE"))

    def url(self, data_dir: Path) -> str:
        """SQLAlchemy async URL; runbook DSNs (`postgres://...`) are translated to asyncpg."""
        raw = self.database_url or f"sqlite+aiosqlite:///{(data_dir / 'reelhouse.db').as_posix()}"
        return normalize_database_url(raw)


def normalize_database_url(raw: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            raw = "postgresql+asyncpg://" + raw[len(prefix):]
    if raw.startswith("sqlite://") and not raw.startswith("sqlite+aiosqlite://"):
        raw = "sqlite+aiosqlite://" + raw[len("sqlite://"):]
    # asyncpg does not understand libpq's sslmode query parameter that runbook DSNs carry.
    raw = re.sub(r"([?&])sslmode=disable&?", r"\1", raw).rstrip("?&")
    if not raw.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        raise ValueError("expected a postgres:// or sqlite:// URL")
    return raw


class LoggingSettings(_Section):
    log_level: Literal["debug", "info", "warning", "warn", "error"] = Field("info", validation_alias=_env("LOG_LEVEL"))
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    otel_exporter_otlp_endpoint: str = Field("", validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    otel_trace_sample_rate: float = Field(1.0, ge=0.0, le=1.0, validation_alias=_env("OTEL_TRACE_SAMPLE_RATE"))

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class JobSettings(_Section):
    nats_url: str = Field("", validation_alias=_env("NATS_URL"))
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", validation_alias=_env("WORKER_ID"))
    worker_concurrency: int = Field(4, ge=1, le=256, validation_alias=_env("WORKER_CONCURRENCY"))
    lease_seconds: float = Field(30.0, gt=0, validation_alias=_env("JOB_LEASE_SECONDS"))
    poll_interval: Duration = Field(timedelta(seconds=1), validation_alias=_env("JOB_POLL_INTERVAL"))
    shutdown_grace: Duration = Field(timedelta(seconds=20), validation_alias=_env("WORKER_SHUTDOWN_GRACE"))
    circuit_failure_threshold: int = Field(5, ge=0, validation_alias=_env("CIRCUIT_FAILURE_THRESHOLD"))
    circuit_open_cooldown: Duration = Field(timedelta(minutes=5), validation_alias=_env("CIRCUIT_OPEN_COOLDOWN"))
    worker_stale_after: Duration = Field(timedelta(seconds=60), validation_alias=_env("WORKER_STALE_AFTER"))


class SecuritySettings(_Section):
    master_encryption_key: str = Field("", validation_alias=_env("MASTER_ENCRYPTION_KEY", "ENCRYPTION_KEY"))
    # Keys that were primary before a rotation; records under them are readable until re-wrapped.
    master_encryption_key_previous: CommaList = Field(
        default_factory=list, validation_alias=_env("MASTER_ENCRYPTION_KEY_PREVIOUS"))
    admin_token: str = Field("", validation_alias=_env("ADMIN_TOKEN"))
    rate_limit_enabled: bool = Field(True, validation_alias=_env("RATE_LIMIT_ENABLED"))
    rate_limit_requests_per_ip: int = Field(10, ge=1, validation_alias=_env("RATE_LIMIT_REQUESTS_PER_IP"))
    rate_limit_window_seconds: int = Field(60, ge=1, validation_alias=_env("RATE_LIMIT_WINDOW_SECONDS"))


class StorageSettings(_Section):
    storage_backend: Literal["fs", "s3"] = Field("fs", validation_alias=_env("STORAGE_BACKEND"))
    s3_endpoint: str = Field("", validation_alias=_env("S3_ENDPOINT"))
    s3_bucket: str = Field("", validation_alias=_env("S3_BUCKET"))
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION"))
    s3_access_key_id: str = Field("", validation_alias=_env("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str = Field("", validation_alias=_env("S3_SECRET_ACCESS_KEY"))
    s3_multipart_chunk_mb: int = Field(16, ge=5, le=512, validation_alias=_env("S3_MULTIPART_CHUNK_MB"))
    signed_url_ttl: Duration = Field(timedelta(hours=1), validation_alias=_env("SIGNED_URL_TTL"))


class MediaSettings(_Section):
    ffmpeg_path: str = Field("ffmpeg", validation_alias=_env("FFMPEG_PATH"))
    ffprobe_path: str = Field("ffprobe", validation_alias=_env("FFPROBE_PATH"))
    hls_segment_seconds: int = Field(6, ge=1, le=60, validation_alias=_env("HLS_SEGMENT_SECONDS"))
    hw_accel: Literal["auto", "none", "nvenc", "vaapi", "qsv"] = Field("auto", validation_alias=_env("HW_ACCEL"))
    progress_save_interval: float = Field(2.0, gt=0, validation_alias=_env("PROGRESS_SAVE_INTERVAL"))


class Settings:
    """The whole configuration tree. Sections are read once; `get_settings()` caches the tree."""

    def __init__(self, **overrides: dict[str, Any]) -> None:
        sections = {
            "server": ServerSettings,
            "database": DatabaseSettings,
            "logging": LoggingSettings,
            "jobs": JobSettings,
            "security": SecuritySettings,
            "storage": StorageSettings,
            "media": MediaSettings,
        }
        try:
            for name, cls in sections.items():
                setattr(self, name, cls(**overrides.get(name, {})))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None
        try:
            self.database_url = self.database.url(self.server.data_dir)
            self.server.bind  # noqa: B018 - validate HTTP_ADDR early
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None

    server: ServerSettings
    database: DatabaseSettings
    logging: LoggingSettings
    jobs: JobSettings
    security: SecuritySettings
    storage: StorageSettings
    media: MediaSettings
    database_url: str


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad variable, named by its environment name, never echoing secret values."""
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]).upper() if error["loc"] else "?"
        lines.append(f"{name}: {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
