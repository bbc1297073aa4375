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
import sys
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

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


def comma_list(value: Any) -> list[str]:
    """`a, b,c` -> ["a", "b", "c"]: how the runbooks write lists in one variable."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return list(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# NoDecode: pydantic-settings would otherwise parse a list-typed variable as JSON and reject `a,b`.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(comma_list)]


def instance_dir() -> Path:
    """The directory relative paths (`DATA_DIR=data`, `.env`) are resolved against:
    `REELHOUSE_HOME`, else the reelhouse checkout whose virtualenv runs this process (`make run`
    builds `<checkout>/.venv`), else the current directory. So `<checkout>/.venv/bin/reelhouse`
    finds the same database from any directory."""
    home = os.environ.get("REELHOUSE_HOME")
    if home:
        return Path(home).expanduser().absolute()
    prefix = Path(sys.prefix)
    if sys.prefix != sys.base_prefix:
        manifest = prefix.parent / "pyproject.toml"
        try:
            if manifest.is_file() and 'name = "reelhouse"' in manifest.read_text(encoding="utf-8"):
                return prefix.parent
        except OSError:
            pass  # unreadable: fall back to the current directory
    return Path.cwd()


class ConfigError(Exception):
    """Raised when the environment holds a value reelhouse cannot use; names the variable."""


class SettingsSection(BaseSettings):
    """Base of every settings section, core's and the domains': environment and `.env`,
    unknown variables ignored, fields named by their runbook variable (`from_env(...)`)."""

    model_config = SettingsConfigDict(
        env_file=(instance_dir() / ".env", ".env"), env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )


def from_env(*names: str) -> AliasChoices:
    """The environment variable(s) a field reads, first match wins (runbook names and aliases)."""
    return AliasChoices(*names)


class ServerSettings(SettingsSection):
    data_dir: Path = Field(Path("data"), validation_alias=from_env("DATA_DIR"))
    http_addr: str = Field("127.0.0.1:8080", validation_alias=from_env("HTTP_ADDR"))
    port: int | None = Field(None, ge=1, le=65535, validation_alias=from_env("PORT"))
    env: str = Field("", validation_alias=from_env("ENV"))
    cors_allowed_origins: CommaList = Field(default_factory=list, validation_alias=from_env("CORS_ALLOWED_ORIGINS"))
    cors_permissive: Literal["auto", "true", "false"] = Field("auto", validation_alias=from_env("CORS_PERMISSIVE"))

    @field_validator("cors_permissive", mode="before")
    @classmethod
    def _permissive_words(cls, value: Any) -> Any:
        words = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false", "": "auto"}
        text = str(value).strip().lower()
        return words.get(text, text)

    @property
    def permissive_cors(self) -> bool:
        """Any origin may call the API (no credentials): CORS_PERMISSIVE=1, or `auto` in a
        development environment (ENV=dev/development) with no CORS_ALLOWED_ORIGINS. Unlike
        vod-tender, an unset ENV is not development."""
        if self.cors_permissive != "auto":
            return self.cors_permissive == "true"
        return self.env.strip().lower() in ("dev", "development") and not self.cors_allowed_origins

    public_base_url: str = Field("", validation_alias=from_env("PUBLIC_BASE_URL"))
    embedded_worker: bool = Field(True, validation_alias=from_env("EMBEDDED_WORKER"))
    gc_gen0_threshold: int = Field(50_000, ge=0, validation_alias=from_env("GC_GEN0_THRESHOLD"))

    @field_validator("data_dir")
    @classmethod
    def _anchored(cls, value: Path) -> Path:
        value = value.expanduser()
        return value if value.is_absolute() else instance_dir() / value

    @property
    def bind(self) -> tuple[str, int]:
        """Host and port to listen on; `PORT` (WebEncode's name) overrides the port of `HTTP_ADDR`."""
        host, _, port_text = self.http_addr.rpartition(":")
        if not port_text.isdigit():
            raise ConfigError(f"HTTP_ADDR: expected host:port, got {self.http_addr!r}")
        return (host or "0.0.0.0"), (self.port or int(port_text))


class DatabaseSettings(SettingsSection):
    database_url: str = Field("", validation_alias=from_env("DATABASE_URL", "DB_DSN"))
    pool_size: int = Field(10, ge=1, validation_alias=from_env("DB_POOL_SIZE"))

    def url(self, data_dir: Path) -> str:
        """SQLAlchemy async URL; runbook DSNs (`postgres://...`) are translated to asyncpg."""
        raw = self.database_url or f"sqlite+aiosqlite:///{(data_dir / 'reelhouse.db').as_posix()}"
        return normalize_database_url(raw)


def normalize_database_url(raw: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            raw = "postgresql+asyncpg://" + raw[len(prefix) :]
    if raw.startswith("sqlite://") and not raw.startswith("sqlite+aiosqlite://"):
        raw = "sqlite+aiosqlite://" + raw[len("sqlite://") :]
    # asyncpg does not understand libpq's sslmode query parameter that runbook DSNs carry.
    raw = re.sub(r"([?&])sslmode=disable&?", r"\1", raw).rstrip("?&")
    if not raw.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        raise ValueError("expected a postgres:// or sqlite:// URL")
    return raw


class LoggingSettings(SettingsSection):
    log_level: Literal["debug", "info", "warning", "warn", "error"] = Field(
        "info", validation_alias=from_env("LOG_LEVEL")
    )
    log_format: Literal["text", "json"] = Field("text", validation_alias=from_env("LOG_FORMAT"))
    otel_exporter_otlp_endpoint: str = Field("", validation_alias=from_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    otel_trace_sample_rate: float = Field(1.0, ge=0.0, le=1.0, validation_alias=from_env("OTEL_TRACE_SAMPLE_RATE"))

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class JobSettings(SettingsSection):
    nats_url: str = Field("", validation_alias=from_env("NATS_URL"))
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", validation_alias=from_env("WORKER_ID")
    )
    worker_concurrency: int = Field(4, ge=1, le=256, validation_alias=from_env("WORKER_CONCURRENCY"))
    lease_seconds: float = Field(30.0, gt=0, validation_alias=from_env("JOB_LEASE_SECONDS"))
    poll_interval: Duration = Field(timedelta(seconds=1), validation_alias=from_env("JOB_POLL_INTERVAL"))
    shutdown_grace: Duration = Field(timedelta(seconds=20), validation_alias=from_env("WORKER_SHUTDOWN_GRACE"))
    circuit_failure_threshold: int = Field(5, ge=0, validation_alias=from_env("CIRCUIT_FAILURE_THRESHOLD"))
    circuit_open_cooldown: Duration = Field(timedelta(minutes=5), validation_alias=from_env("CIRCUIT_OPEN_COOLDOWN"))
    worker_stale_after: Duration = Field(timedelta(seconds=60), validation_alias=from_env("WORKER_STALE_AFTER"))


class SecuritySettings(SettingsSection):
    master_encryption_key: str = Field("", validation_alias=from_env("MASTER_ENCRYPTION_KEY", "ENCRYPTION_KEY"))
    # Keys that were primary before a rotation; records under them are readable until re-wrapped.
    master_encryption_key_previous: CommaList = Field(
        default_factory=list, validation_alias=from_env("MASTER_ENCRYPTION_KEY_PREVIOUS")
    )
    admin_token: str = Field("", validation_alias=from_env("ADMIN_TOKEN"))
    rate_limit_enabled: bool = Field(True, validation_alias=from_env("RATE_LIMIT_ENABLED"))
    rate_limit_requests_per_ip: int = Field(10, ge=1, validation_alias=from_env("RATE_LIMIT_REQUESTS_PER_IP"))
    rate_limit_window_seconds: int = Field(60, ge=1, validation_alias=from_env("RATE_LIMIT_WINDOW_SECONDS"))


class StorageSettings(SettingsSection):
    storage_backend: Literal["fs", "s3"] = Field("fs", validation_alias=from_env("STORAGE_BACKEND"))
    s3_endpoint: str = Field("", validation_alias=from_env("S3_ENDPOINT"))
    s3_bucket: str = Field("", validation_alias=from_env("S3_BUCKET"))
    s3_region: str = Field("us-east-1", validation_alias=from_env("S3_REGION"))
    s3_access_key_id: str = Field("", validation_alias=from_env("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str = Field("", validation_alias=from_env("S3_SECRET_ACCESS_KEY"))
    s3_multipart_chunk_mb: int = Field(16, ge=5, le=512, validation_alias=from_env("S3_MULTIPART_CHUNK_MB"))
    signed_url_ttl: Duration = Field(timedelta(hours=1), validation_alias=from_env("SIGNED_URL_TTL"))


class MediaSettings(SettingsSection):
    ffmpeg_path: str = Field("ffmpeg", validation_alias=from_env("FFMPEG_PATH"))
    ffprobe_path: str = Field("ffprobe", validation_alias=from_env("FFPROBE_PATH"))
    hls_segment_seconds: int = Field(6, ge=1, le=60, validation_alias=from_env("HLS_SEGMENT_SECONDS"))
    hw_accel: Literal["auto", "none", "nvenc", "vaapi", "qsv"] = Field("auto", validation_alias=from_env("HW_ACCEL"))
    progress_save_interval: float = Field(2.0, gt=0, validation_alias=from_env("PROGRESS_SAVE_INTERVAL"))
    # 0: ffmpeg picks (one thread per core); 1 pins an encode to one core (benches, shared hosts).
    ffmpeg_threads: int = Field(0, ge=0, le=64, validation_alias=from_env("FFMPEG_THREADS"))
    # yt-dlp's HLS fragments: aria2c when it is installed (Debian package aria2), or yt-dlp's own.
    ytdlp_downloader: Literal["aria2c", "native"] = Field("aria2c", validation_alias=from_env("YTDLP_DOWNLOADER"))


S = TypeVar("S", bound="SettingsSection")


class Settings:
    """The whole configuration tree. Core sections are read when the tree is built; a domain's
    section is read on first `section(cls)` (the domain's composition root asks for it at
    start-up, so a bad value still stops start-up). `get_settings()` caches the tree."""

    def __init__(self, **overrides: dict[str, Any]) -> None:
        self._sections: dict[type[SettingsSection], SettingsSection] = {}
        core_sections = {
            "server": ServerSettings,
            "database": DatabaseSettings,
            "logging": LoggingSettings,
            "jobs": JobSettings,
            "security": SecuritySettings,
            "storage": StorageSettings,
            "media": MediaSettings,
        }
        try:
            for name, cls in core_sections.items():
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

    def sqlite_path(self) -> Path | None:
        """The SQLite file, when the database is one."""
        url = make_url(self.database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database).absolute()

    def database_label(self) -> str:
        """The database named for people: the SQLite file, or the PostgreSQL URL without password."""
        path = self.sqlite_path()
        if path is not None:
            return f"SQLite {path}"
        return f"PostgreSQL {make_url(self.database_url).render_as_string(hide_password=True)}"

    def section(self, cls: type[S]) -> S:
        """The domain section `cls`, read from the environment once per tree; an invalid value
        raises `ConfigError` naming the variable."""
        cached = self._sections.get(cls)
        if cached is None:
            try:
                cached = self._sections[cls] = cls()
            except ValidationError as exc:
                raise ConfigError(describe_validation_error(exc)) from None
        assert isinstance(cached, cls)
        return cached

    def use_section(self, section: SettingsSection) -> None:
        """Install an already built section (tests and embedders that build settings in code)."""
        self._sections[type(section)] = section


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
