"""Archive settings: vod-tender's environment variables, parsed and checked at start-up.

The names and defaults are vod-tender's (reference §2) so its `.env` files work unchanged.
Where vod-tender silently ignored a bad value (an invalid `DOWNLOAD_RATE_LIMIT` was logged and
dropped), an invalid value here stops start-up with a message naming the variable. A few knobs
vod-tender hard-coded are variables here (catalog page size and pacing, fragment concurrency,
upload chunk size, base URLs so tests point the real clients at wire-level fakes).

`archive_settings(settings)` attaches the section to the core `Settings` tree once; handlers
then layer the `/config` overrides (`settings_overrides.apply_overrides`) on top per task.
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode

from reelhouse.archive.twitch.oauth import DEFAULT_SCOPES as TWITCH_DEFAULT_SCOPES
from reelhouse.config import Duration, Settings, SettingsSection, comma_list, format_duration, from_env
from reelhouse.core.providers.youtube import DEFAULT_SCOPES as YOUTUBE_DEFAULT_SCOPES

CHANNEL_NAME = re.compile(r"[a-z0-9_]{1,25}")  # Twitch logins; also safe as a directory name
_RATE = re.compile(r"\d+(\.\d+)?[KMG]B?", re.IGNORECASE)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MIN_INTERVAL = timedelta(seconds=1)  # periodic work more often than this would spin
UPLOAD_GRANULARITY = 256 * 1024  # YouTube resumable chunks are multiples of 256 KiB
TEMPLATE_FIELDS = ("date", "datetime", "title", "channel", "vod_id", "url", "description")
DEFAULT_DESCRIPTION_TEMPLATE = (
    "{description}\n\n"
    "Original stream date: {datetime}\n"
    'Attribution: Original Twitch channel "{channel}"\n'
    "Original Twitch VOD ID: {vod_id}\n"
    "Original Twitch URL: {url}"
)
TRANSCODE_OFF = {"", "0", "false", "no", "off"}
TRANSCODE_DEFAULT_PROFILE = "mp4-720p"
# NoDecode: pydantic-settings would otherwise parse a list variable as JSON and reject `a,b`.
ChannelList = Annotated[list[str], NoDecode, BeforeValidator(comma_list)]
ScopeList = Annotated[list[str], NoDecode, BeforeValidator(comma_list)]


def parse_size(value: Any) -> int:
    """Bytes from `50G`, `1.5GiB`, `500M` or a plain number (binary units, like yt-dlp's)."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"invalid size {value!r} (examples: 500M, 20G, 1073741824)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def check_channel_name(name: str) -> str:
    """Normalise and validate a Twitch login: it names a directory under DATA_DIR, so anything
    but `[a-z0-9_]` (a `/`, `..`) is refused rather than escaped."""
    login = name.strip().lower()
    if not CHANNEL_NAME.fullmatch(login):
        raise ValueError(f"invalid Twitch channel name {name!r} (letters, digits, underscore; at most 25)")
    return login


class ArchiveSettings(SettingsSection):
    # -- Twitch ------------------------------------------------------------------------------
    twitch_channel: str = Field("", validation_alias=from_env("TWITCH_CHANNEL"))
    twitch_channels: ChannelList = Field(default_factory=list, validation_alias=from_env("TWITCH_CHANNELS"))
    twitch_client_id: str = Field("", validation_alias=from_env("TWITCH_CLIENT_ID"))
    twitch_client_secret: str = Field("", repr=False, validation_alias=from_env("TWITCH_CLIENT_SECRET"))
    twitch_api_base: str = Field("https://api.twitch.tv/helix", validation_alias=from_env("TWITCH_API_BASE"))
    twitch_auth_base: str = Field("https://id.twitch.tv/oauth2", validation_alias=from_env("TWITCH_AUTH_BASE"))
    twitch_video_url_template: str = Field(
        "https://www.twitch.tv/videos/{id}", validation_alias=from_env("TWITCH_VIDEO_URL_TEMPLATE")
    )

    # -- discovery / catalog -----------------------------------------------------------------
    vod_process_interval: Duration = Field(timedelta(minutes=1), validation_alias=from_env("VOD_PROCESS_INTERVAL"))
    vod_discovery_limit: int = Field(20, ge=1, le=100, validation_alias=from_env("VOD_DISCOVERY_LIMIT"))
    vod_catalog_backfill_interval: Duration = Field(
        timedelta(hours=6), validation_alias=from_env("VOD_CATALOG_BACKFILL_INTERVAL")
    )
    vod_catalog_max: int = Field(0, ge=0, validation_alias=from_env("VOD_CATALOG_MAX"))
    vod_catalog_max_age_days: int = Field(0, ge=0, validation_alias=from_env("VOD_CATALOG_MAX_AGE_DAYS"))
    vod_catalog_page_size: int = Field(100, ge=1, le=100, validation_alias=from_env("VOD_CATALOG_PAGE_SIZE"))
    vod_catalog_page_delay: Duration = Field(
        timedelta(seconds=1.2), validation_alias=from_env("VOD_CATALOG_PAGE_DELAY")
    )

    # -- processing / download ---------------------------------------------------------------
    processing_retry_cooldown: Duration = Field(
        timedelta(seconds=600), validation_alias=from_env("PROCESSING_RETRY_COOLDOWN")
    )
    download_max_attempts: int = Field(5, ge=1, validation_alias=from_env("DOWNLOAD_MAX_ATTEMPTS"))
    download_backoff_base: Duration = Field(timedelta(seconds=2), validation_alias=from_env("DOWNLOAD_BACKOFF_BASE"))
    max_concurrent_downloads: int = Field(1, ge=1, le=64, validation_alias=from_env("MAX_CONCURRENT_DOWNLOADS"))
    download_rate_limit: str = Field("", validation_alias=from_env("DOWNLOAD_RATE_LIMIT"))
    download_max_bytes: int = Field(0, ge=0, validation_alias=from_env("DOWNLOAD_MAX_BYTES"))
    download_timeout: Duration = Field(timedelta(hours=6), validation_alias=from_env("DOWNLOAD_TIMEOUT"))
    ytdlp_args: str = Field("", validation_alias=from_env("YTDLP_ARGS"))
    ytdlp_cookies_path: str = Field("", validation_alias=from_env("YTDLP_COOKIES_PATH"))
    ytdlp_concurrent_fragments: int = Field(10, ge=1, le=64, validation_alias=from_env("YTDLP_CONCURRENT_FRAGMENTS"))
    ytdlp_verbose: bool = Field(False, validation_alias=from_env("YTDLP_VERBOSE"))
    data_cleanup_max_age: Duration = Field(timedelta(hours=24), validation_alias=from_env("DATA_CLEANUP_MAX_AGE"))

    # -- retention ---------------------------------------------------------------------------
    retention_keep_days: int = Field(0, ge=0, validation_alias=from_env("RETENTION_KEEP_DAYS"))
    retention_keep_count: int = Field(0, ge=0, validation_alias=from_env("RETENTION_KEEP_COUNT"))
    retain_keep_newer_than_days: int = Field(7, ge=0, validation_alias=from_env("RETAIN_KEEP_NEWER_THAN_DAYS"))
    retention_dry_run: bool = Field(False, validation_alias=from_env("RETENTION_DRY_RUN"))
    retention_interval: Duration = Field(timedelta(hours=6), validation_alias=from_env("RETENTION_INTERVAL"))
    backfill_autoclean: bool = Field(True, validation_alias=from_env("BACKFILL_AUTOCLEAN"))

    # -- upload ------------------------------------------------------------------------------
    upload_max_attempts: int = Field(5, ge=1, validation_alias=from_env("UPLOAD_MAX_ATTEMPTS"))
    upload_backoff_base: Duration = Field(timedelta(seconds=2), validation_alias=from_env("UPLOAD_BACKOFF_BASE"))
    upload_daily_limit: int = Field(10, ge=0, validation_alias=from_env("UPLOAD_DAILY_LIMIT"))
    backfill_upload_daily_limit: int = Field(10, ge=0, validation_alias=from_env("BACKFILL_UPLOAD_DAILY_LIMIT"))
    upload_chunk_bytes: int = Field(
        32 * UPLOAD_GRANULARITY, ge=UPLOAD_GRANULARITY, validation_alias=from_env("UPLOAD_CHUNK_BYTES")
    )
    youtube_upload_enabled: bool = Field(False, validation_alias=from_env("YOUTUBE_UPLOAD_ENABLED"))
    yt_client_id: str = Field("", validation_alias=from_env("YT_CLIENT_ID"))
    yt_client_secret: str = Field("", repr=False, validation_alias=from_env("YT_CLIENT_SECRET"))
    yt_redirect_uri: str = Field("", validation_alias=from_env("YT_REDIRECT_URI"))
    youtube_privacy: Literal["private", "unlisted", "public"] = Field(
        "private", validation_alias=from_env("YOUTUBE_PRIVACY")
    )
    youtube_title_template: str = Field("{date} {title}", validation_alias=from_env("YOUTUBE_TITLE_TEMPLATE"))
    youtube_description_template: str = Field(
        DEFAULT_DESCRIPTION_TEMPLATE, validation_alias=from_env("YOUTUBE_DESCRIPTION_TEMPLATE")
    )
    youtube_api_base: str = Field("https://www.googleapis.com", validation_alias=from_env("YOUTUBE_API_BASE"))
    youtube_oauth_base: str = Field("https://oauth2.googleapis.com", validation_alias=from_env("YOUTUBE_OAUTH_BASE"))
    transcode_before_upload: str = Field("", validation_alias=from_env("TRANSCODE_BEFORE_UPLOAD"))

    @field_validator("*", mode="before")
    @classmethod
    def _blank_means_default(cls, value: Any, info: ValidationInfo) -> Any:
        # `RETENTION_KEEP_DAYS=` in an env file means "unset", as in vod-tender, not an error.
        if isinstance(value, str) and value.strip() == "" and info.field_name:
            field = cls.model_fields[info.field_name]
            return field.get_default(call_default_factory=True)
        return value

    @field_validator("vod_process_interval", "retention_interval")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < MIN_INTERVAL:
            raise ValueError(f"must be at least {format_duration(MIN_INTERVAL)}")
        return value

    @field_validator("download_max_bytes", "upload_chunk_bytes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("download_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        value = value.strip()
        if value and not _RATE.fullmatch(value):
            raise ValueError("expected a yt-dlp rate such as 500K, 4M or 1.5MB")
        return value

    @field_validator("ytdlp_args")
    @classmethod
    def _args(cls, value: str) -> str:
        shlex.split(value)  # unbalanced quotes fail here, at start-up, not at the first download
        return value

    @field_validator("twitch_channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return check_channel_name(value) if value.strip() else ""

    @field_validator("twitch_channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(check_channel_name(name) for name in value))

    @field_validator("upload_chunk_bytes")
    @classmethod
    def _chunk(cls, value: int) -> int:
        if value % UPLOAD_GRANULARITY:
            raise ValueError(f"must be a multiple of {UPLOAD_GRANULARITY} bytes (256 KiB)")
        return value

    @field_validator("youtube_title_template", "youtube_description_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(TEMPLATE_FIELDS, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad template ({exc!r}); fields: {', '.join(TEMPLATE_FIELDS)}") from None
        return value

    @field_validator("twitch_video_url_template")
    @classmethod
    def _url_template(cls, value: str) -> str:
        if "{id}" not in value:
            raise ValueError("must contain {id}")
        return value

    @model_validator(mode="after")
    def _transcode_profile(self) -> ArchiveSettings:
        if self.transcode_profile is not None:
            from reelhouse.core.media.profiles import builtin_profile

            try:
                profile = builtin_profile(self.transcode_profile)
            except LookupError as exc:
                raise ValueError(f"TRANSCODE_BEFORE_UPLOAD: {exc}") from None
            if profile.kind != "mp4":
                raise ValueError("TRANSCODE_BEFORE_UPLOAD: needs an mp4 profile")
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        """TWITCH_CHANNELS wins over TWITCH_CHANNEL (vod-tender's multi-channel rule)."""
        if self.twitch_channels:
            return list(self.twitch_channels)
        return [self.twitch_channel] if self.twitch_channel else []

    @property
    def ytdlp_extra_args(self) -> list[str]:
        return shlex.split(self.ytdlp_args)

    @property
    def transcode_profile(self) -> str | None:
        text = self.transcode_before_upload.strip()
        if text.lower() in TRANSCODE_OFF:
            return None
        return TRANSCODE_DEFAULT_PROFILE if text.lower() in ("1", "true", "yes", "on") else text

    def vod_url(self, twitch_vod_id: str) -> str:
        return self.twitch_video_url_template.format(id=twitch_vod_id)

    def is_back_catalog(self, date: datetime | None, now: datetime | None = None) -> bool:
        """A VOD older than RETAIN_KEEP_NEWER_THAN_DAYS counts against the backfill upload cap."""
        if date is None or self.retain_keep_newer_than_days <= 0:
            return False
        now = now or datetime.now(UTC)
        return date < now - timedelta(days=self.retain_keep_newer_than_days)


class OAuthFlowSettings(SettingsSection):
    """The connect flows' own variables (vod-tender's names)."""

    twitch_redirect_uri: str = Field("", validation_alias=from_env("TWITCH_REDIRECT_URI"))
    # vod-tender accepts commas or spaces between scopes.
    twitch_scopes: ScopeList = Field(
        default_factory=lambda: list(TWITCH_DEFAULT_SCOPES), validation_alias=from_env("TWITCH_SCOPES")
    )
    yt_scopes: ScopeList = Field(
        default_factory=lambda: list(YOUTUBE_DEFAULT_SCOPES), validation_alias=from_env("YT_SCOPES")
    )

    def scopes(self, provider: str) -> list[str]:
        raw = self.twitch_scopes if provider == "twitch" else self.yt_scopes
        return [scope for item in raw for scope in item.split()]


def archive_settings(settings: Settings) -> ArchiveSettings:
    """The archive section of `settings`, read from the environment on first use."""
    return settings.section(ArchiveSettings)
