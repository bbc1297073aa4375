"""VOD downloads through core's yt-dlp runner, and what its errors mean for a Twitch VOD.

The runner (core/media/ytdlp) does the work: progress, `.part` resume, cancel, size and memory
bounds, aria2c. This module keeps the archive's call shape (`run_download(request, on_progress)`)
and is the one place where a runner error becomes a job-engine error: a VOD that was removed,
deleted, is subscriber-only or needs a login can never succeed (permanent); a 401/403 or 400 is
retried, because Twitch's CDN also answers so for an expired playlist signature, which the next
attempt renews; anything else is transient.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError
from reelhouse.core.media.ytdlp import (
    Cause,
    ProgressCallback,
    YtdlpError,
    YtdlpProgress,
    YtdlpRequest,
    YtdlpResult,
    YtdlpTooLarge,
    YtdlpTransient,
    discard_partial_files,
    run_ytdlp,
)

DownloadProgress = YtdlpProgress
DownloadResult = YtdlpResult
# Twitch VODs and plain HLS/MP4 URLs need two of yt-dlp's ~1,900 extractors (matching a URL
# against all of them is most of yt-dlp's CPU for a short VOD); YTDLP_ARGS can add more
# (`--use-extractors default` restores them all: the lists are merged).
EXTRACTORS = "twitch:vod,generic"

_MEANINGS = {
    Cause.GONE: "VOD gone (HTTP 410)",
    Cause.DELETED: "VOD was deleted",
    Cause.UNAVAILABLE: "VOD is unavailable",
    Cause.PRIVATE: "VOD is private",
    Cause.SUBSCRIBERS_ONLY: "VOD is subscriber-only",
    Cause.LOGIN_REQUIRED: "VOD needs a logged-in account (YTDLP_COOKIES_PATH)",
    Cause.DRM: "VOD is DRM protected",
    Cause.NO_FORMATS: "no downloadable formats",
    Cause.UNSUPPORTED_URL: "URL not supported by yt-dlp",
    Cause.INVALID_URL: "invalid VOD URL",
    Cause.BAD_ARGUMENTS: "yt-dlp rejected its arguments (check YTDLP_ARGS)",
    Cause.FORMAT_UNAVAILABLE: "requested format is not available (check YTDLP_ARGS)",
    Cause.COOKIES_MISSING: "YTDLP_COOKIES_PATH is not usable",
}
# Answers Twitch also gives for an expired playlist signature: the next attempt fetches a new one.
_RETRIED = {Cause.FORBIDDEN, Cause.BAD_REQUEST}

__all__ = [
    "DownloadProgress",
    "DownloadRequest",
    "DownloadResult",
    "classify",
    "discard_partial_files",
    "run_download",
]


@dataclass(frozen=True)
class DownloadRequest(YtdlpRequest):
    """A VOD download: `output` is stable per VOD, so `.part` files are found again after a
    restart; the result is always an MP4."""

    extractors: str | None = EXTRACTORS
    merge_output_format: str | None = "mp4"


def classify(error: YtdlpError, max_bytes: int = 0) -> TaskError:
    """The engine error for a failed VOD download."""
    detail = f"\nlast output:\n{error.detail}" if error.detail else ""
    if isinstance(error, YtdlpTooLarge):
        return PermanentError(f"VOD is larger than DOWNLOAD_MAX_BYTES ({max_bytes} bytes): {error.reason}")
    if isinstance(error, YtdlpTransient) or error.cause in _RETRIED:
        return TransientError(f"yt-dlp failed: {error.reason}{detail}")
    if error.cause is Cause.NOT_FOUND:
        meaning = (
            "VOD not found (HTTP 404): deleted or never existed" if error.http_status == 404 else "VOD does not exist"
        )
    else:
        meaning = _MEANINGS.get(error.cause, "VOD cannot be downloaded")
    return PermanentError(f"{meaning}: {error.reason}{detail}")


async def run_download(req: DownloadRequest, on_progress: ProgressCallback | None = None) -> DownloadResult:
    """Download one VOD to `req.output`, resuming what a previous run left; errors are the
    engine's (see `classify`). Cancelling the caller stops yt-dlp before CancelledError
    propagates."""
    try:
        return await run_ytdlp(req, on_progress)
    except YtdlpError as error:
        raise classify(error, req.max_bytes) from None
