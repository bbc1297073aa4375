"""Fetch a source URL through core's yt-dlp runner (direct file links and any site yt-dlp knows),
and what its errors mean for an encode job.

A source URL is user input: a missing, forbidden, private or unsupported URL will not get better
by retrying (permanent, with yt-dlp's reason); a source over MAX_UPLOAD_BYTES is permanent;
network trouble and server errors are retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError
from reelhouse.core.media.ytdlp import (
    Downloader,
    YtdlpError,
    YtdlpProgress,
    YtdlpRequest,
    YtdlpTooLarge,
    YtdlpTransient,
    discard_partial_files,
    run_ytdlp,
)


@dataclass(frozen=True)
class FetchProgress:
    downloaded: int
    total: int | None
    speed: float | None
    eta_seconds: float | None

    @property
    def fraction(self) -> float | None:
        return min(self.downloaded / self.total, 1.0) if self.total else None


FetchCallback = Callable[[FetchProgress], Awaitable[None]]


def check_source_url(url: str) -> str:
    """Only http(s): `file://` and friends would let an API caller read the server's disk
    (WebEncode accepted `file://` sources)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"source_url must be an http(s) URL, got {url[:80]!r}")
    return url.strip()


def classify(error: YtdlpError, max_bytes: int) -> TaskError:
    """The engine error for a failed fetch of a user's source URL."""
    if isinstance(error, YtdlpTooLarge):
        return PermanentError(f"source is larger than MAX_UPLOAD_BYTES ({max_bytes} bytes)")
    if isinstance(error, YtdlpTransient):
        return TransientError(f"fetching source failed: {error.reason}")
    return PermanentError(f"cannot fetch source: {error.reason}")


async def fetch_url(
    url: str,
    target_dir: Path,
    *,
    max_bytes: int,
    on_progress: FetchCallback | None = None,
    ffmpeg_path: str | None = None,
    proxy: str | None = None,
    downloader: Downloader = "aria2c",
) -> Path:
    """Download `url` into `target_dir` and return the file. Cancelling the caller stops yt-dlp
    and what it started, so a cancelled job leaves no process behind. `proxy`: the SSRF guard
    (core.net.outbound.GuardedProxy) every connection goes through."""

    async def report(progress: YtdlpProgress) -> None:
        if on_progress is not None:
            await on_progress(
                FetchProgress(progress.downloaded_bytes, progress.total_bytes, progress.speed, progress.eta)
            )

    request = YtdlpRequest(
        url=url,
        output=target_dir / "source.%(ext)s",
        max_bytes=max_bytes,
        restrict_filenames=True,
        ffmpeg_location=ffmpeg_path,
        downloader=downloader,
        proxy=proxy,
    )
    try:
        result = await run_ytdlp(request, report)
    except YtdlpError as error:
        # A fetch is not resumed by a later attempt (each attempt has its own scratch folder).
        discard_partial_files(request.output)
        raise classify(error, max_bytes) from None
    return result.path
