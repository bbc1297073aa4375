"""The one yt-dlp runner: archive's VOD downloads and encode's URL fetches both use it.

    result = await run_ytdlp(YtdlpRequest(url, output, max_bytes=...), on_progress)

It raises its own errors (`YtdlpError` and subclasses, with a `cause`); each domain maps them to
the job engine's errors in one place (archive/ytdlp.py, encode/fetch.py).
"""

from reelhouse.core.media.ytdlp.errors import (
    Cause,
    YtdlpError,
    YtdlpRejected,
    YtdlpTooLarge,
    YtdlpTransient,
    YtdlpUnavailable,
    classify_failure,
)
from reelhouse.core.media.ytdlp.output import YtdlpProgress, parse_progress_line, redact_argv, scrub
from reelhouse.core.media.ytdlp.runner import (
    Downloader,
    ProgressCallback,
    YtdlpRequest,
    YtdlpResult,
    build_args,
    discard_partial_files,
    find_aria2c,
    partial_files,
    run_ytdlp,
)

__all__ = [
    "Cause",
    "Downloader",
    "ProgressCallback",
    "YtdlpError",
    "YtdlpProgress",
    "YtdlpRejected",
    "YtdlpRequest",
    "YtdlpResult",
    "YtdlpTooLarge",
    "YtdlpTransient",
    "YtdlpUnavailable",
    "build_args",
    "classify_failure",
    "discard_partial_files",
    "find_aria2c",
    "parse_progress_line",
    "partial_files",
    "redact_argv",
    "run_ytdlp",
    "scrub",
]
