"""Settings of live recording (channels choose it with `record_mode`; see docs/CONFIG.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field

from reelhouse.archive.settings import parse_size
from reelhouse.archive.twitch.playback import DEFAULT_GQL_URL, DEFAULT_USHER_BASE, WEB_CLIENT_ID
from reelhouse.config import Duration, SettingsSection, from_env


class LiveSettings(SettingsSection):
    gql_url: str = Field(DEFAULT_GQL_URL, validation_alias=from_env("TWITCH_GQL_URL"))
    usher_base: str = Field(DEFAULT_USHER_BASE, validation_alias=from_env("TWITCH_USHER_BASE"))
    gql_client_id: str = Field(WEB_CLIENT_ID, validation_alias=from_env("TWITCH_GQL_CLIENT_ID"))
    # A Turbo/subscribed account's web token gets playback tokens without stitched ads.
    oauth_token: str = Field("", repr=False, validation_alias=from_env("TWITCH_LIVE_OAUTH_TOKEN"))
    player_type: str = Field("site", max_length=32, validation_alias=from_env("LIVE_PLAYER_TYPE"))
    quality: str = Field("source", max_length=32, validation_alias=from_env("LIVE_RECORD_QUALITY"))
    # The stream counts as ended once usher has said "offline" for this long (a broadcaster's
    # short reconnect is one stream; Helix keeps its started_at across it too).
    end_grace: Duration = Field(timedelta(seconds=60), validation_alias=from_env("LIVE_RECORD_END_GRACE"))
    # No new segment for this long: ask usher again (a new edge, or the stream is gone).
    stall_timeout: Duration = Field(timedelta(seconds=30), validation_alias=from_env("LIVE_RECORD_STALL_TIMEOUT"))
    segment_max_bytes: Annotated[int, BeforeValidator(parse_size)] = Field(
        64 * 1024 * 1024,
        ge=1024,
        validation_alias=from_env("LIVE_SEGMENT_MAX_BYTES"),
    )
    # How often Helix is asked which live-recorded channels are live, when chat auto mode (which
    # asks every CHAT_AUTO_POLL_INTERVAL for all watched channels) is off.
    poll_interval: Duration = Field(timedelta(seconds=30), validation_alias=from_env("LIVE_RECORD_POLL_INTERVAL"))
    max_attempts: int = Field(50, ge=1, validation_alias=from_env("LIVE_RECORD_MAX_ATTEMPTS"))
    # "both": copies whose durations differ by less than this are equally complete.
    compare_tolerance: Duration = Field(timedelta(seconds=2), validation_alias=from_env("LIVE_COMPARE_TOLERANCE"))
    # A VOD download waits for a running recording of its stream; retried this often.
    settle_retry: Duration = Field(timedelta(seconds=30), validation_alias=from_env("LIVE_SETTLE_RETRY"))
