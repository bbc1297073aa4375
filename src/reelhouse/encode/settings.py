"""The encode domain's configuration section (environment variables, like every other section)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from reelhouse.config import Duration, SettingsSection, from_env

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any) -> Any:
    """`10G`, `512MiB`, `1048576`: operators write sizes with units. Units are binary (1K = 1024)."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"invalid size {value!r} (examples: 500M, 10G, 1048576)")
        return int(float(match.group(1)) * _SIZE_SCALE[match.group(2).lower()])
    return value


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def _clean_prefix(value: str) -> str:
    value = value.strip().strip("/")
    if not value or any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("must be a storage key prefix such as 'encodes' (no empty, '.' or '..' parts)")
    return value


class EncodeSettings(SettingsSection):
    output_prefix: str = Field("encodes", validation_alias=from_env("ENCODE_OUTPUT_PREFIX"))
    """Every encode output lives under this storage prefix; /media serves nothing else."""
    upload_prefix: str = Field("uploads/encode", validation_alias=from_env("ENCODE_UPLOAD_PREFIX"))
    """Where uploaded and fetched sources are stored before probing."""
    max_upload_bytes: ByteSize = Field(10 << 30, gt=0, validation_alias=from_env("MAX_UPLOAD_BYTES"))
    """Largest upload (and largest yt-dlp download) accepted; WebEncode's cap was 10 GiB too."""
    work_dir: Path | None = Field(None, validation_alias=from_env("ENCODE_WORK_DIR"))
    """Scratch space for per-task temporary directories; default DATA_DIR/work/encode."""
    default_profile: str = Field("hls-default", validation_alias=from_env("ENCODE_DEFAULT_PROFILE"))
    media_link_ttl: Duration = Field(timedelta(hours=6), validation_alias=from_env("ENCODE_MEDIA_LINK_TTL"))
    """Lifetime of signed playback links (GET /v1/assets/{id}/link)."""
    transcode_concurrency: int = Field(1, ge=1, le=64, validation_alias=from_env("ENCODE_TRANSCODE_CONCURRENCY"))
    """Transcodes per worker: one ffmpeg ladder already uses every core."""
    transcode_timeout: Duration = Field(timedelta(hours=6), validation_alias=from_env("ENCODE_TRANSCODE_TIMEOUT"))
    fetch_timeout: Duration = Field(timedelta(hours=2), validation_alias=from_env("ENCODE_FETCH_TIMEOUT"))
    max_attempts: int = Field(3, ge=1, le=20, validation_alias=from_env("ENCODE_MAX_ATTEMPTS"))
    segmented: Literal["auto", "never", "always"] = Field("auto", validation_alias=from_env("ENCODE_SEGMENTED"))
    """Segment-parallel encode: `auto` when two or more capable workers are idle and the source
    is long enough, `always` even on one worker (benches), `never` one task per profile."""
    segment_min_seconds: float = Field(10.0, ge=1, le=3600, validation_alias=from_env("ENCODE_SEGMENT_MIN_SECONDS"))
    """Shortest segment; a source shorter than twice this keeps the single-task path."""
    segments_per_worker: int = Field(2, ge=1, le=16, validation_alias=from_env("ENCODE_SEGMENTS_PER_WORKER"))
    max_segments: int = Field(64, ge=2, le=1000, validation_alias=from_env("ENCODE_MAX_SEGMENTS"))

    webhook_max_attempts: int = Field(8, ge=1, le=50, validation_alias=from_env("WEBHOOK_MAX_ATTEMPTS"))
    """Delivery attempts per event and webhook (backoff between them, core/jobs/retry.py)."""
    webhook_backoff_base: Duration = Field(timedelta(seconds=5), validation_alias=from_env("WEBHOOK_BACKOFF_BASE"))
    webhook_backoff_cap: Duration = Field(timedelta(hours=1), validation_alias=from_env("WEBHOOK_BACKOFF_CAP"))
    webhook_disable_after: int = Field(10, ge=1, le=1000, validation_alias=from_env("WEBHOOK_DISABLE_AFTER"))
    """Consecutive failed attempts after which a webhook is disabled (the reason is shown)."""
    webhook_timeout: Duration = Field(timedelta(seconds=10), validation_alias=from_env("WEBHOOK_TIMEOUT"))
    publish_backoff_base: Duration = Field(timedelta(seconds=10), validation_alias=from_env("PUBLISH_BACKOFF_BASE"))
    """First retry delay of a failed publish (doubling, capped at an hour)."""
    plugin_dir: Path = Field(Path("plugins"), validation_alias=from_env("PLUGIN_DIR"))
    """Operator plugins: `<PLUGIN_DIR>/<id>/plugin.toml` packages (encode/plugins.py)."""
    event_poll_interval: Duration = Field(timedelta(seconds=1), validation_alias=from_env("ENCODE_EVENT_POLL_INTERVAL"))
    """How often each API node looks for job and worker changes (webhooks, SSE, metrics)."""

    @field_validator("output_prefix", "upload_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _clean_prefix(value)

    def scratch_dir(self, data_dir: Path) -> Path:
        return self.work_dir or data_dir / "work" / "encode"
