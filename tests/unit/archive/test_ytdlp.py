"""archive/ytdlp.py: what the yt-dlp runner's errors mean for a Twitch VOD (retry or give up, and the words).

The runner itself (progress lines, classification, aria2c): tests/unit/media/test_ytdlp_*.py."""

from __future__ import annotations

import pytest

from reelhouse.archive.ytdlp import classify
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.media.ytdlp import Cause, YtdlpRejected, YtdlpTooLarge, YtdlpTransient, YtdlpUnavailable


@pytest.mark.parametrize(
    ("error", "kind", "starts"),
    [
        (
            YtdlpUnavailable("HTTP Error 404", Cause.NOT_FOUND, http_status=404),
            PermanentError,
            "VOD not found (HTTP 404)",
        ),
        (YtdlpUnavailable("Video 9 does not exist", Cause.NOT_FOUND), PermanentError, "VOD does not exist"),
        (YtdlpUnavailable("deleted", Cause.DELETED), PermanentError, "VOD was deleted"),
        (YtdlpUnavailable("only for subscribers", Cause.SUBSCRIBERS_ONLY), PermanentError, "VOD is subscriber-only"),
        (YtdlpUnavailable("log in", Cause.LOGIN_REQUIRED), PermanentError, "VOD needs a logged-in account"),
        (YtdlpRejected("no such option", Cause.BAD_ARGUMENTS), PermanentError, "yt-dlp rejected its arguments"),
        (YtdlpRejected("gone", Cause.COOKIES_MISSING), PermanentError, "YTDLP_COOKIES_PATH"),
        # Twitch's CDN answers 403 for an expired playlist signature: the next attempt renews it.
        (YtdlpUnavailable("HTTP Error 403", Cause.FORBIDDEN, http_status=403), TransientError, "yt-dlp failed"),
        (YtdlpRejected("HTTP Error 400", Cause.BAD_REQUEST, http_status=400), TransientError, "yt-dlp failed"),
        (
            YtdlpTransient("HTTP Error 503", Cause.FAILED, detail="tail"),
            TransientError,
            "yt-dlp failed: HTTP Error 503",
        ),
        (YtdlpTransient("busy", Cause.BUSY), TransientError, "yt-dlp failed: busy"),
        (
            YtdlpTooLarge("9 bytes fetched", Cause.TOO_LARGE),
            PermanentError,
            "VOD is larger than DOWNLOAD_MAX_BYTES (5 bytes)",
        ),
    ],
)
def test_runner_errors_map_to_engine_errors(error, kind, starts):
    mapped = classify(error, max_bytes=5)
    assert type(mapped) is kind and mapped.reason.startswith(starts), mapped.reason
    assert error.reason in mapped.reason
