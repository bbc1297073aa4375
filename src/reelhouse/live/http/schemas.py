"""Response and request models of the live API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from reelhouse.core.http.bounds import StorageKeyText, UrlText


class Telemetry(BaseModel):
    bitrate: int | None = Field(
        None, description="bits/s the publisher sends (the ingest's byte count over the last 10 s of its timestamps)"
    )
    video_bitrate: int | None = Field(None, description="the video's share of `bitrate`")
    audio_bitrate: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    uptime_seconds: float | None = None
    transcode: str | None = Field(None, description="the live transcode task's status (given_up: no more replacements)")
    transcode_revivals: int | None = Field(None, description="live transcodes replaced this session (monitor)")
    viewers: int = Field(0, description="distinct callers of the HLS output in the last 30 s")


class StreamView(BaseModel):
    id: int
    user_id: int | None
    title: str
    description: str | None
    playback_id: str = Field(description="public name of the live output; not the publish key")
    key_hint: str = Field(description="the publish key's first characters")
    profile: str
    record: bool
    is_live: bool
    session: int
    live_since: datetime | None
    last_live_at: datetime | None
    job_id: int | None
    telemetry: Telemetry | None
    telemetry_at: datetime | None
    ingest_url: str = Field(description="where to publish (RTMP server URL); the key is the stream name")
    playback_url: str = Field(description="the live master playlist (same credentials as the API)")
    created_at: datetime
    updated_at: datetime


class StreamWithKey(StreamView):
    publish_key: str = Field(description="shown once: only its hash is stored")


class StreamList(BaseModel):
    streams: list[StreamView]


class StreamCreate(BaseModel):
    title: str = Field(min_length=1, max_length=100)
    description: str | None = Field(None, max_length=500)
    profile: str | None = Field(None, max_length=64)
    record: bool = True


class StreamUpdate(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=500)
    profile: str | None = Field(None, max_length=64)
    record: bool | None = None


class DestinationCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    url: UrlText = Field(description="rtmp:// or rtmps:// server URL (YouTube/Twitch ingest URL)")
    key: str | None = Field(None, max_length=512, description="stream key; stored encrypted, never returned")
    enabled: bool = True


class DestinationUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    url: UrlText | None = None
    key: str | None = Field(None, max_length=512)
    enabled: bool | None = None


class DestinationView(BaseModel):
    id: int
    stream_id: int
    name: str
    url: str
    has_key: bool
    enabled: bool
    state: str = Field(description="idle | connecting | live | retrying | stopped")
    last_error: str | None
    reconnects: int
    state_at: datetime | None


class DestinationList(BaseModel):
    destinations: list[DestinationView]


class RecordingView(BaseModel):
    id: int
    stream_id: int
    session: int
    state: str = Field(description="recording | finalizing | encoding | empty | failed")
    segments: int
    duration: float | None
    source_key: str | None
    encode_job_id: int | None
    encode_job: str | None = Field(None, description="the VOD encode job (its outputs are the asset)")
    started_at: datetime
    ended_at: datetime | None


class RecordingList(BaseModel):
    recordings: list[RecordingView]


class PlaybackLink(BaseModel):
    url: str = Field(description="signed, expiring link to the live master playlist (no credentials)")
    expires_at: int


class RestreamCreate(BaseModel):
    source_key: StorageKeyText | None = None
    source_url: UrlText | None = None
    url: UrlText = Field(description="rtmp(s):// destination")
    key: str | None = Field(None, max_length=512)
    mode: Literal["once", "loop"] = "once"
    start_at: datetime | None = Field(None, description="scheduled start (default now)")


class RestreamView(BaseModel):
    id: int
    source: str
    source_kind: str
    url: str
    has_key: bool
    mode: str
    state: str
    last_error: str | None
    job_id: int | None
    created_at: datetime


class RestreamList(BaseModel):
    restreams: list[RestreamView]


class CallbackOutcome(BaseModel):
    ok: bool
    detail: dict[str, Any] = {}
