"""Chat settings: the vod-tender variables for chat recording (reference §2.1) plus the knobs
of the batched writer, the auto-mode reconciliation and the replay stream.

Channels and the Helix credentials are not here: they belong to the archive as a whole and are
read from `ArchiveSettings`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field, field_validator

from reelhouse.config import Duration, SettingsSection, from_env


class ChatSettings(SettingsSection):
    auto_start: bool = Field(False, validation_alias=from_env("CHAT_AUTO_START"))
    auto_poll_interval: Duration = Field(timedelta(seconds=30), validation_alias=from_env("CHAT_AUTO_POLL_INTERVAL"))
    # Wait after a stream ends before the first reconciliation attempt (vod-tender: 1m).
    reconcile_delay: Duration = Field(timedelta(minutes=1), validation_alias=from_env("VOD_RECONCILE_DELAY"))
    # How long after the stream ended reconciliation keeps trying (vod-tender: 15m, hard-coded).
    reconcile_window: Duration = Field(timedelta(hours=24), validation_alias=from_env("CHAT_RECONCILE_WINDOW"))
    # A VOD matches a stream when its created_at is this close to the stream's started_at.
    reconcile_match_window: Duration = Field(
        timedelta(minutes=10), validation_alias=from_env("CHAT_RECONCILE_MATCH_WINDOW")
    )
    reconcile_retry: Duration = Field(timedelta(seconds=30), validation_alias=from_env("CHAT_RECONCILE_RETRY"))
    reconcile_retry_max: Duration = Field(timedelta(minutes=10), validation_alias=from_env("CHAT_RECONCILE_RETRY_MAX"))

    bot_username: str = Field("", validation_alias=from_env("TWITCH_BOT_USERNAME"))
    oauth_token: str = Field("", validation_alias=from_env("TWITCH_OAUTH_TOKEN"), repr=False)
    # Manual mode: record TWITCH_CHANNEL's chat under this VOD id, rel timestamps from start.
    vod_id: str = Field("", validation_alias=from_env("TWITCH_VOD_ID"))
    vod_start: datetime | None = Field(None, validation_alias=from_env("TWITCH_VOD_START"))

    batch_size: int = Field(1000, ge=1, le=100_000, validation_alias=from_env("CHAT_BATCH_SIZE"))
    flush_interval_ms: int = Field(250, ge=1, le=60_000, validation_alias=from_env("CHAT_FLUSH_INTERVAL_MS"))
    queue_size: int = Field(100_000, ge=100, validation_alias=from_env("CHAT_QUEUE_SIZE"))
    # A message that waits longer than this in the reader's buffer, or from there to its commit, is late.
    late_after: Duration = Field(timedelta(seconds=5), validation_alias=from_env("CHAT_LATE_AFTER"))

    irc_host: str = Field("irc.chat.twitch.tv", validation_alias=from_env("TWITCH_IRC_HOST"))
    irc_port: int | None = Field(None, ge=1, le=65535, validation_alias=from_env("TWITCH_IRC_PORT"))
    irc_tls: bool = Field(True, validation_alias=from_env("TWITCH_IRC_TLS"))

    sse_heartbeat: Duration = Field(timedelta(seconds=15), validation_alias=from_env("CHAT_SSE_HEARTBEAT"))

    @field_validator("auto_start", "irc_tls", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object, info) -> object:
        # `CHAT_AUTO_START=` (set but empty) is how compose files switch a flag off.
        if value == "":
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("vod_start", mode="before")
    @classmethod
    def _blank_start_is_now(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("vod_start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # RFC 3339 requires an offset; a naive value would be ambiguous across hosts.
        if value is not None and value.tzinfo is None:
            raise ValueError("TWITCH_VOD_START needs a time zone (RFC 3339, e.g. 2024-05-01T18:00:00Z)")
        return value

    @property
    def manual_mode(self) -> bool:
        return bool(self.vod_id) and not self.auto_start

    @property
    def enabled(self) -> bool:
        return self.auto_start or self.manual_mode

    @property
    def flush_interval(self) -> float:
        return self.flush_interval_ms / 1000.0
