"""Reading yt-dlp's output: progress lines, the final path, and scrubbing secrets out of both.

yt-dlp prints progress on stdout with `--newline` and our machine-readable `--progress-template`
(vod-tender read only stderr and never saw progress); the default `[download] 12.3% of ...` line
is understood too, for when YTDLP_ARGS replaced the template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PROGRESS_PREFIX = "[reelhouse-progress]"
PROGRESS_TEMPLATE = (
    f"download:{PROGRESS_PREFIX} %(progress.downloaded_bytes)s %(progress.total_bytes)s "
    "%(progress.total_bytes_estimate)s %(progress.speed)s %(progress.eta)s"
)
FILE_PREFIX = "[reelhouse-file] "
FILE_TEMPLATE = f"after_move:{FILE_PREFIX}%(filepath)s"
# Printed by run_yt_dlp.py when aria2c takes over an HLS download.
DOWNLOADER_PREFIX = "[reelhouse-downloader] "

_DEFAULT_LINE = re.compile(
    r"\[download\]\s+(?P<pct>[\d.]+)%\s+of\s+~?\s*(?P<size>[\d.]+)(?P<unit>[KMGT]?i?B)"
    r"(?:\s+at\s+(?P<speed>[\d.]+)(?P<sunit>[KMGT]?i?B)/s)?(?:\s+ETA\s+(?P<eta>[\d:]+))?"
)
_UNITS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}
_SECRET_PATTERNS = [
    (re.compile(r"(?i)((?:cookie|set-cookie|authorization|proxy-authorization)\s*:\s*)[^\r\n]+"), r"\1<redacted>"),
    (
        re.compile(
            r"(?i)((?:^|[?&;\s])(?:token|sig|signature|auth[-_]token|access_token|client_secret|"
            r"password|api_key|key)=)[^&;\s\"']+"
        ),
        r"\1<redacted>",
    ),
]
_SECRET_FLAGS = {
    "-p",
    "--password",
    "-u",
    "--username",
    "--video-password",
    "--ap-password",
    "--ap-username",
    "--twofactor",
    "-2",
    "--add-header",
    "--add-headers",
    "--cookies",
    "--client-certificate-password",
}


@dataclass(frozen=True)
class YtdlpProgress:
    downloaded_bytes: int
    total_bytes: int | None  # exact when yt-dlp knows it, else its estimate
    speed: float | None  # bytes/s
    eta: float | None  # seconds
    exact_total: bool = False

    @property
    def fraction(self) -> float | None:
        if not self.total_bytes:
            return None
        return max(0.0, min(1.0, self.downloaded_bytes / self.total_bytes))


def scrub(text: str) -> str:
    """Cookies, authorization headers and token-like query values replaced by `<redacted>`."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_argv(argv: Sequence[str]) -> list[str]:
    """argv safe to log: values of credential options and secrets in URLs removed."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        flag, eq, _value = arg.partition("=")
        if flag in _SECRET_FLAGS:
            if eq:
                out.append(f"{flag}=<redacted>")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(scrub(arg))
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # yt-dlp prints "NA" for unknown fields


def parse_progress_line(line: str) -> YtdlpProgress | None:
    """Our template's line, or yt-dlp's default `[download] 12.3% of ~4.00MiB at ...` line."""
    line = line.strip()
    if line.startswith(PROGRESS_PREFIX):
        fields = line[len(PROGRESS_PREFIX) :].split()
        if len(fields) != 5:
            return None
        done, total, estimate, speed, eta = (_number(f) for f in fields)
        if done is None and total is not None:
            done = total  # the "already downloaded" line carries the size only
        if done is None:
            return None
        return YtdlpProgress(int(done), int(total or estimate or 0) or None, speed, eta, exact_total=total is not None)
    match = _DEFAULT_LINE.search(line)
    if match is None:
        return None
    size = float(match.group("size")) * _UNITS.get(match.group("unit"), 1)
    speed = float(match.group("speed")) * _UNITS.get(match.group("sunit"), 1) if match.group("speed") else None
    eta = None
    if match.group("eta"):
        eta = float(sum(int(p) * 60**i for i, p in enumerate(reversed(match.group("eta").split(":")))))
    return YtdlpProgress(int(size * float(match.group("pct")) / 100), int(size), speed, eta)
