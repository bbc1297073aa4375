"""Archive domain registration: called by core through the `reelhouse.domains` entry point."""

from __future__ import annotations

from reelhouse.archive import api, pipeline
from reelhouse.archive.chat import api as chat_api
from reelhouse.core.runtime import Runtime


def setup(runtime: Runtime) -> None:
    """Register the VOD pipeline (tasks, periodic discovery/catalog/retention, /status fields,
    gauges), the vod-tender HTTP API, and chat recording and replay."""
    pipeline.register(runtime)
    api.register(runtime)
    chat_api.register(runtime)
