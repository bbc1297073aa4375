"""What can go wrong running yt-dlp, as the runner's own small error hierarchy.

The runner never raises the job engine's errors: whether a missing video or a 403 is worth
another attempt is the domain's call (archive: a Twitch VOD that was deleted or is
subscriber-only; encode: a URL a user typed), made in one function per domain. The runner only
says what happened, with a `cause` code the domains switch on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum


class Cause(StrEnum):
    # YtdlpUnavailable: the media is gone or closed to us
    NOT_FOUND = "not_found"  # HTTP 404, "does not exist"
    GONE = "gone"  # HTTP 410
    DELETED = "deleted"
    UNAVAILABLE = "unavailable"  # "video unavailable", "no longer available"
    PRIVATE = "private"
    SUBSCRIBERS_ONLY = "subscribers_only"
    LOGIN_REQUIRED = "login_required"
    FORBIDDEN = "forbidden"  # HTTP 401/403 without a more specific message
    DRM = "drm"
    NO_FORMATS = "no_formats"
    # YtdlpRejected: the request itself is wrong
    UNSUPPORTED_URL = "unsupported_url"
    INVALID_URL = "invalid_url"
    BAD_ARGUMENTS = "bad_arguments"
    FORMAT_UNAVAILABLE = "format_unavailable"
    BAD_REQUEST = "bad_request"  # HTTP 400
    COOKIES_MISSING = "cookies_missing"
    # YtdlpTransient: another attempt may succeed
    FAILED = "failed"  # network, 5xx, fragments, anything unrecognised
    KILLED = "killed"  # yt-dlp died by a signal
    NO_OUTPUT = "no_output"  # exited 0 without the file
    BUSY = "busy"  # another live process writes the same output
    # YtdlpTooLarge
    TOO_LARGE = "too_large"


class YtdlpError(Exception):
    """`reason`: one line for people; `headline`: yt-dlp's own last error line; `detail`: the
    last lines of its output (scrubbed of secrets)."""

    def __init__(
        self, reason: str, cause: Cause, *, headline: str = "", detail: str = "", http_status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason, self.cause, self.headline, self.detail, self.http_status = (
            reason,
            cause,
            headline,
            detail,
            http_status,
        )

    def __str__(self) -> str:
        return f"{self.reason}\nlast output:\n{self.detail}" if self.detail else self.reason


class YtdlpUnavailable(YtdlpError):
    """Removed, never existed, private, subscriber-only, needs a login, DRM, no formats."""


class YtdlpRejected(YtdlpError):
    """Bad input: an unsupported or invalid URL, arguments yt-dlp refuses, a missing cookies file."""


class YtdlpTransient(YtdlpError):
    """Network trouble, server errors, a killed process: worth another attempt."""


class YtdlpTooLarge(YtdlpError):
    """More bytes than the request's `max_bytes`."""


# Case-insensitive substrings of yt-dlp's error lines, most specific first.
_CLASSIFIED: list[tuple[str, type[YtdlpError], Cause, int | None]] = [
    ("has been deleted", YtdlpUnavailable, Cause.DELETED, None),
    ("subscriber", YtdlpUnavailable, Cause.SUBSCRIBERS_ONLY, None),
    ("must be logged in", YtdlpUnavailable, Cause.LOGIN_REQUIRED, None),
    ("login required", YtdlpUnavailable, Cause.LOGIN_REQUIRED, None),
    ("authentication required", YtdlpUnavailable, Cause.LOGIN_REQUIRED, None),
    ("private video", YtdlpUnavailable, Cause.PRIVATE, None),
    ("drm protected", YtdlpUnavailable, Cause.DRM, None),
    ("no video formats found", YtdlpUnavailable, Cause.NO_FORMATS, None),
    ("requested format is not available", YtdlpRejected, Cause.FORMAT_UNAVAILABLE, None),
    ("unsupported url", YtdlpRejected, Cause.UNSUPPORTED_URL, None),
    ("is not a valid url", YtdlpRejected, Cause.INVALID_URL, None),
    ("http error 404", YtdlpUnavailable, Cause.NOT_FOUND, 404),
    ("404: not found", YtdlpUnavailable, Cause.NOT_FOUND, 404),
    ("http error 410", YtdlpUnavailable, Cause.GONE, 410),
    ("http error 401", YtdlpUnavailable, Cause.FORBIDDEN, 401),
    ("http error 403", YtdlpUnavailable, Cause.FORBIDDEN, 403),
    ("http error 400", YtdlpRejected, Cause.BAD_REQUEST, 400),
    ("does not exist", YtdlpUnavailable, Cause.NOT_FOUND, None),
    ("no longer available", YtdlpUnavailable, Cause.UNAVAILABLE, None),
    ("video unavailable", YtdlpUnavailable, Cause.UNAVAILABLE, None),
    ("this video is unavailable", YtdlpUnavailable, Cause.UNAVAILABLE, None),
]
# optparse's "yt-dlp: error: no such option" (the prog name varies with how it was started).
_ARGUMENT_ERROR = re.compile(r"^\S+: error: ")
TOO_LARGE_MARKER = "larger than max-filesize"


def error_lines(tail: Sequence[str]) -> list[str]:
    """Lines in which yt-dlp reported an error; warnings ("ffmpeg ... does not exist") never count."""
    return [line for line in tail if "ERROR:" in line or _ARGUMENT_ERROR.match(line.strip())]


def classify_failure(returncode: int, tail: Sequence[str]) -> YtdlpError:
    """The error for a yt-dlp run that exited with `returncode` after printing `tail`.

    Only yt-dlp's own error lines decide, and only for a real exit status: a death by signal is
    always transient, whatever the output said before."""
    errors = error_lines(tail)
    headline = errors[-1].strip() if errors else ""
    detail = "\n".join(tail[-15:])[-1500:]
    if returncode < 0:
        return YtdlpTransient(
            f"yt-dlp was killed by signal {-returncode}", Cause.KILLED, headline=headline, detail=detail
        )
    if any(TOO_LARGE_MARKER in line for line in tail):
        return YtdlpTooLarge("the download is larger than its size limit", Cause.TOO_LARGE, detail=detail)
    lowered = "\n".join(errors).lower()
    for needle, kind, cause, status in _CLASSIFIED:
        if needle in lowered:
            return kind(headline, cause, headline=headline, detail=detail, http_status=status)
    if returncode == 2 or any(_ARGUMENT_ERROR.match(line.strip()) for line in errors):
        return YtdlpRejected(
            headline or "yt-dlp rejected its arguments", Cause.BAD_ARGUMENTS, headline=headline, detail=detail
        )
    return YtdlpTransient(
        headline or f"yt-dlp exited with status {returncode} and no error message",
        Cause.FAILED,
        headline=headline,
        detail=detail,
    )
