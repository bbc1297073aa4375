"""Response bodies of the archive's routes. The vod-tender-compatible ones keep vod-tender's
field names and types (reference/vodtender-openapi.yaml): `title` and `date` are always strings,
ids are Twitch VOD ids; reelhouse's additions are extra fields a vod-tender client ignores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field


def rfc3339(value: datetime | None) -> str | None:
    """Go's time.Time JSON form, which vod-tender clients parse: `2024-05-01T12:00:00Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class VodListItem(BaseModel):
    id: str = Field(description="Twitch VOD id")
    title: str
    date: str = Field(description="RFC 3339; when the VOD has no date yet, when reelhouse first saw it")
    processed: bool
    youtube_url: str | None
    channel: str


class VodDetail(VodListItem):
    duration_seconds: int | None
    downloaded_path: str | None = Field(description="the local file; null for anonymous callers")
    download_state: str | None = Field(
        description="pending | downloading | complete | failed | canceled | interrupted (vod-tender's spelling)"
    )
    download_retries: int | None
    download_total: int | None
    progress_updated_at: str | None
    description: str
    processing_error: str | None
    priority: int
    skip_upload: bool
    job_id: int | None


class VodProgress(BaseModel):
    vod_id: str
    state: str | None
    percent: float | None = Field(description="0-100")
    retries: int
    total_bytes: int | None
    downloaded_path: str | None = Field(description="the local file; null for anonymous callers")
    processed: bool
    processing_error: str | None
    youtube_url: str | None
    progress_updated_at: str | None
    bytes: int | None
    speed: float | None = Field(description="bytes per second while downloading")
    eta: float | None = Field(description="seconds left while downloading")


class TaskOutcome(BaseModel):
    task_id: int
    status: str


class VodCancelled(BaseModel):
    status: str = "cancelling"
    vod_id: str
    job_id: int | None
    tasks: list[TaskOutcome]


class VodDescription(BaseModel):
    vod_id: str
    description: str


class ScanQueued(BaseModel):
    status: str = "ok"
    channel: str
    task_id: int


class CatalogQueued(ScanQueued):
    max: int
    max_age_days: int


class PrioritySet(BaseModel):
    status: str = "ok"
    vod_id: str
    priority: int


class SkipUploadSet(BaseModel):
    status: str = "ok"
    vod_id: str
    skip_upload: bool


class ChannelView(BaseModel):
    name: str
    twitch_user_id: str | None
    enabled: bool
    paused: bool = Field(False, description="paused by an operator: not discovered, chat not recorded")
    source: str = Field(description="env | api | cli")
    created_at: str | None
    record_mode: str = Field(
        "vod",
        description="vod: download the VOD after the stream | live: record the live stream | both: keep the better",
    )


class ChatMessage(BaseModel):
    """vod-tender's fields (abs_timestamp, username, message, badges, emotes, color,
    rel_timestamp) and what it never stored."""

    abs_timestamp: str
    rel_timestamp: float
    username: str | None
    display_name: str | None
    message: str | None
    badges: str | None
    emotes: str | None
    color: str | None
    message_id: str | None
    user_id: str | None
    kind: str = Field(description="message, action (/me), notice, clear... (see ?kind=)")
    bits: int
    reply_to_id: str | None
    reply_to_username: str | None
    reply_to_message: str | None
    tags: dict[str, Any]


class AuthorizeUrl(BaseModel):
    authorize_url: str
    expires_in: int


class TwitchConnected(BaseModel):
    status: str = "ok"
    scopes: list[str]
    expires_in: int


class TwitchRefreshed(TwitchConnected):
    expires_at: str | None


class YouTubeConnected(BaseModel):
    status: str = "ok"
    expiry: str | None
    access_token_present: bool
    refresh_token_present: bool
