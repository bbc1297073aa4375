"""Settings of the NATS transport (NATS_URL itself is in JobSettings, WebEncode's name)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from reelhouse.config import CommaList, Duration, SettingsSection, from_env


class NatsSettings(SettingsSection):
    # Subjects, streams and buckets are named after it, so two deployments (or tests) can share
    # one NATS server: `<prefix>.tasks.<capability>`, stream `<PREFIX>_WORK`, ...
    nats_prefix: str = Field("reelhouse", pattern=r"^[A-Za-z0-9_-]{1,40}$", validation_alias=from_env("NATS_PREFIX"))
    ack_wait: Duration = Field(timedelta(seconds=30), validation_alias=from_env("NATS_ACK_WAIT"))
    max_deliver: int = Field(20, ge=1, le=1000, validation_alias=from_env("NATS_MAX_DELIVER"))
    worker_ttl: Duration = Field(timedelta(seconds=15), validation_alias=from_env("NATS_WORKER_TTL"))
    dispatch_interval: Duration = Field(
        timedelta(milliseconds=500), validation_alias=from_env("NATS_DISPATCH_INTERVAL")
    )
    redispatch_after: Duration = Field(timedelta(minutes=10), validation_alias=from_env("NATS_REDISPATCH_AFTER"))
    # `serve` with NATS_URL runs the kernel side (dispatcher, events consumer, registry mirror).
    kernel: bool = Field(True, validation_alias=from_env("NATS_KERNEL"))
    # Whether `serve`'s embedded worker also runs the kinds NATS workers run (default: leave
    # them to the remote workers).
    embedded_remote_kinds: bool = Field(False, validation_alias=from_env("NATS_EMBEDDED_REMOTE_KINDS"))
    worker_transport: Literal["auto", "database", "nats"] = Field("auto", validation_alias=from_env("WORKER_TRANSPORT"))
    # Capabilities a worker declares on top of the detected ones (a GPU the test encode cannot
    # see, or a label such as `region-eu`).
    extra_capabilities: CommaList = Field(default_factory=list, validation_alias=from_env("WORKER_EXTRA_CAPABILITIES"))
