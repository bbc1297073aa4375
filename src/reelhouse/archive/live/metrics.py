"""Live recording metrics (docs/OPERATIONS.md, "Live recording")."""

from __future__ import annotations

from reelhouse.core.telemetry.metrics import counter, gauge

RECORDINGS_STARTED = counter("live_recordings_started_total", "Live recordings started", ("channel",))
RECORDINGS_FINISHED = counter(
    "live_recordings_finished_total", "Live recordings written to an MP4", ("channel", "outcome")
)
SEGMENTS = counter("live_segments_recorded_total", "Live content segments stored", ("channel",))
SEGMENT_BYTES = counter("live_segment_bytes_total", "Bytes of live content segments stored", ("channel",))
AD_SEGMENTS = counter("live_ad_segments_skipped_total", "Stitched ad segments skipped", ("channel",))
LOST_SEGMENTS = counter(
    "live_segments_lost_total", "Live segments that left the window or the edge before being read", ("channel",)
)
DISCONTINUITIES = counter("live_discontinuities_total", "Discontinuities in recorded live streams", ("channel",))
RESUMES = counter(
    "live_recording_resumes_total", "Recording runs that continued an earlier run's segments", ("channel",)
)
KEPT = counter("live_copies_kept_total", "Which copy became the VOD's file", ("channel", "copy"))
RECORDING = gauge("live_recordings_active", "Live recordings in progress (any worker)")
