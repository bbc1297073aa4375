"""The live domain's configuration section (LIVE_* variables, docs/CONFIG.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from reelhouse.config import Duration, SettingsSection, from_env


class LiveSettings(SettingsSection):
    live_enabled: Literal["auto", "true", "false"] = Field("auto", validation_alias=from_env("LIVE_ENABLED"))
    """auto: the ingest runs when nginx and its RTMP module are installed; true: start-up fails without them."""
    rtmp_bind: str = Field("0.0.0.0", validation_alias=from_env("LIVE_RTMP_BIND"))
    rtmp_port: int = Field(1935, ge=1, le=65535, validation_alias=from_env("LIVE_RTMP_PORT"))
    stat_port: int = Field(8935, ge=1, le=65535, validation_alias=from_env("LIVE_STAT_PORT"))
    """Loopback HTTP port of nginx's RTMP statistics (telemetry is read from it)."""
    ingest_host: str = Field("127.0.0.1", validation_alias=from_env("LIVE_INGEST_HOST"))
    """Where workers pull the published stream from (the host running the ingest)."""
    callback_url: str = Field("", validation_alias=from_env("LIVE_CALLBACK_URL"))
    """Base URL nginx calls back (on_publish); default http://127.0.0.1:PORT."""
    nginx_path: str = Field("nginx", validation_alias=from_env("LIVE_NGINX_PATH"))
    rtmp_module: Path = Field(
        Path("/usr/lib/nginx/modules/ngx_rtmp_module.so"), validation_alias=from_env("LIVE_RTMP_MODULE")
    )
    nginx_dir: Path | None = Field(None, validation_alias=from_env("LIVE_NGINX_DIR"))
    """nginx's prefix (config, pid, logs); default DATA_DIR/live/nginx."""
    storage_prefix: str = Field("live", pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$", validation_alias=from_env("LIVE_PREFIX"))
    segment_seconds: int = Field(1, ge=1, le=10, validation_alias=from_env("LIVE_SEGMENT_SECONDS"))
    window_segments: int = Field(6, ge=3, le=60, validation_alias=from_env("LIVE_WINDOW_SEGMENTS"))
    ll_hls: bool = Field(False, validation_alias=from_env("LIVE_LL_HLS"))
    """Low-Latency HLS: parts of LIVE_PART_SECONDS, blocking playlist reload, preload hints."""
    part_seconds: float = Field(0.5, ge=0.1, le=2.0, validation_alias=from_env("LIVE_PART_SECONDS"))
    record_segment_seconds: int = Field(4, ge=1, le=30, validation_alias=from_env("LIVE_RECORD_SEGMENT_SECONDS"))
    default_profile: str = Field("hls-default", validation_alias=from_env("LIVE_PROFILE"))
    """A built-in profile: the live ladder and the VOD encode of recordings."""
    vod_output_prefix: str = Field("encodes/live", validation_alias=from_env("LIVE_VOD_OUTPUT_PREFIX"))
    """Where the VOD encodes of recordings go; keep it under ENCODE_OUTPUT_PREFIX so they are served."""
    max_streams_per_user: int = Field(20, ge=1, le=1000, validation_alias=from_env("LIVE_MAX_STREAMS_PER_USER"))
    max_destinations: int = Field(10, ge=1, le=50, validation_alias=from_env("LIVE_MAX_DESTINATIONS"))
    monitor_interval: Duration = Field(timedelta(seconds=2), validation_alias=from_env("LIVE_MONITOR_INTERVAL"))
    transcode_revivals: int = Field(5, ge=0, le=100, validation_alias=from_env("LIVE_TRANSCODE_REVIVALS"))
    """How often a session's live transcode that ended for good (dead, failed, cancelled) while
    the stream is live is replaced by the monitor, with a growing backoff."""
    transcode_revive_backoff: Duration = Field(
        timedelta(seconds=2), validation_alias=from_env("LIVE_TRANSCODE_REVIVE_BACKOFF")
    )
    """The wait before the first replacement; doubled for each next one, at most a minute."""
    link_ttl: Duration = Field(timedelta(hours=6), validation_alias=from_env("LIVE_LINK_TTL"))
    input_timeout: Duration = Field(timedelta(seconds=5), validation_alias=from_env("LIVE_INPUT_TIMEOUT"))
    """A pull from the ingest that gets no data this long ends (the publisher is gone)."""
    restream_backoff_cap: Duration = Field(
        timedelta(seconds=30), validation_alias=from_env("LIVE_RESTREAM_BACKOFF_CAP")
    )

    def nginx_prefix(self, data_dir: Path) -> Path:
        return self.nginx_dir or data_dir / "live" / "nginx"

    def ingest_url(self, playback_id: str) -> str:
        return f"rtmp://{self.ingest_host}:{self.rtmp_port}/live/{playback_id}"
