"""Live metrics: seed 002's `webencode_streams_live` and per-stream gauges from the telemetry."""

from __future__ import annotations

import contextlib
from typing import Any

from reelhouse.core.runtime import Runtime
from reelhouse.core.telemetry.metrics import counter, gauge

STREAMS_LIVE = gauge("webencode_streams_live", "Number of live streams")
STREAM_BITRATE = gauge("reelhouse_live_stream_bitrate_bits", "Bits/s the ingest receives", ["stream"])
STREAM_FPS = gauge("reelhouse_live_stream_fps", "Frame rate the publisher sends", ["stream"])
STREAM_VIEWERS = gauge("reelhouse_live_stream_viewers", "Viewers of the live HLS output", ["stream"])
STREAM_HEIGHT = gauge("reelhouse_live_stream_height_pixels", "Height of the published video", ["stream"])
TRANSCODE_REVIVED = counter(
    "reelhouse_live_transcode_revived", "Live transcodes replaced while their stream was live", ["status"]
)
TRANSCODE_GIVEN_UP = counter(
    "reelhouse_live_transcode_given_up", "Live sessions left without a transcode (LIVE_TRANSCODE_REVIVALS reached)"
)
PUBLISH_REFUSED = counter("reelhouse_live_publish_refused_total", "Refused publish attempts", ["reason"])
_labelled: set[str] = set()


def set_stream_gauges(live: dict[str, dict[str, Any]]) -> None:
    """`live`: telemetry by stream id of every live stream; others' series are removed."""
    STREAMS_LIVE.set(len(live))
    for stream, telemetry in live.items():
        STREAM_BITRATE.labels(stream).set(telemetry.get("bitrate") or 0)
        STREAM_FPS.labels(stream).set(telemetry.get("fps") or 0)
        STREAM_VIEWERS.labels(stream).set(telemetry.get("viewers") or 0)
        STREAM_HEIGHT.labels(stream).set(telemetry.get("height") or 0)
    for gone in _labelled - set(live):
        for metric in (STREAM_BITRATE, STREAM_FPS, STREAM_VIEWERS, STREAM_HEIGHT):
            with contextlib.suppress(KeyError):  # never exported for this stream
                metric.remove(gone)
    _labelled.clear()
    _labelled.update(live)


async def live_status(runtime: Runtime) -> dict[str, Any]:
    from reelhouse.live.services import LiveServices

    services = runtime.component(LiveServices)
    return {"live": {"streams_live": await services.store.count_live()}}


async def refresh_metrics(runtime: Runtime) -> None:
    from reelhouse.live.services import LiveServices

    services = runtime.component(LiveServices)
    rows = await services.store.live_streams()
    set_stream_gauges(
        {str(r["id"]): {**(r["telemetry"] or {}), "viewers": services.viewers.count(int(r["id"]))} for r in rows}
    )
