"""core/media/ytdlp/errors.py: yt-dlp's error lines classified into the runner's own errors."""

from __future__ import annotations

import pytest

from reelhouse.core.media.ytdlp import (
    Cause,
    YtdlpRejected,
    YtdlpTooLarge,
    YtdlpTransient,
    YtdlpUnavailable,
    classify_failure,
)


@pytest.mark.parametrize(
    ("code", "lines", "kind", "cause", "status"),
    [
        (
            1,
            ["ERROR: [generic] index: Unable to download webpage: HTTP Error 404: Not Found"],
            YtdlpUnavailable,
            Cause.NOT_FOUND,
            404,
        ),
        (
            1,
            ["ERROR: [twitch:vod] 123: This video is only available to subscribers"],
            YtdlpUnavailable,
            Cause.SUBSCRIBERS_ONLY,
            None,
        ),
        (
            1,
            ["ERROR: [twitch:vod] 9: You must be logged into an account that has access"],
            YtdlpUnavailable,
            Cause.LOGIN_REQUIRED,
            None,
        ),
        (1, ["ERROR: [twitch:vod] 9: Video 9 does not exist"], YtdlpUnavailable, Cause.NOT_FOUND, None),
        (
            1,
            ["ERROR: [youtube] x: Private video. Sign in if you've been granted access"],
            YtdlpUnavailable,
            Cause.PRIVATE,
            None,
        ),
        (
            1,
            ["ERROR: unable to download video data: HTTP Error 403: Forbidden"],
            YtdlpUnavailable,
            Cause.FORBIDDEN,
            403,
        ),
        (1, ["ERROR: [generic] x: HTTP Error 410: Gone"], YtdlpUnavailable, Cause.GONE, 410),
        (1, ["ERROR: Unsupported URL: https://example.com/x"], YtdlpRejected, Cause.UNSUPPORTED_URL, None),
        (1, ["ERROR: HTTP Error 400: Bad Request"], YtdlpRejected, Cause.BAD_REQUEST, 400),
        (
            2,
            ["Usage: yt-dlp [OPTIONS]", "yt-dlp: error: no such option: --bogus"],
            YtdlpRejected,
            Cause.BAD_ARGUMENTS,
            None,
        ),
        (2, ["Usage: run_yt_dlp.py [OPTIONS]"], YtdlpRejected, Cause.BAD_ARGUMENTS, None),
        (
            1,
            ["ERROR: unable to download video data: HTTP Error 503: Service Unavailable"],
            YtdlpTransient,
            Cause.FAILED,
            None,
        ),
        (1, ["ERROR: fragment 3 not found, unable to continue"], YtdlpTransient, Cause.FAILED, None),
        # A warning that happens to say "does not exist" must not make a network error permanent.
        (
            1,
            ["WARNING: ffmpeg-location ffmpeg does not exist!", "ERROR: Connection reset by peer"],
            YtdlpTransient,
            Cause.FAILED,
            None,
        ),
        # Killed by a signal: transient whatever came before.
        (-9, ["ERROR: HTTP Error 404: Not Found"], YtdlpTransient, Cause.KILLED, None),
        (
            0,
            ["[info] File is larger than max-filesize (2000 bytes > 1000 bytes). Aborting."],
            YtdlpTooLarge,
            Cause.TOO_LARGE,
            None,
        ),
        (1, [], YtdlpTransient, Cause.FAILED, None),
    ],
)
def test_failures_are_classified_by_yt_dlps_error_lines(code, lines, kind, cause, status):
    error = classify_failure(code, lines)
    assert type(error) is kind and error.cause is cause and error.http_status == status
    assert error.reason, "every error says something"
    if lines and "ERROR:" in lines[-1] and code > 0:
        assert error.headline == lines[-1]
