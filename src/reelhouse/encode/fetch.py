"""Fetch a source URL with yt-dlp (a subprocess, as the design asks): direct file links and any
site yt-dlp knows, with progress, a size cap and real cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError
from reelhouse.core.media.process import start_tool, stop_process_group

PROGRESS_MARK = "RHPROGRESS"
# One line per update (--newline): downloaded, total, estimated total, speed (B/s), eta (s).
PROGRESS_TEMPLATE = (
    f"download:{PROGRESS_MARK} %(progress.downloaded_bytes)s %(progress.total_bytes)s "
    "%(progress.total_bytes_estimate)s %(progress.speed)s %(progress.eta)s"
)
# yt-dlp errors that no retry can fix.
PERMANENT_MARKERS = (
    "Unsupported URL", "HTTP Error 400", "HTTP Error 401", "HTTP Error 403", "HTTP Error 404",
    "HTTP Error 410", "is not a valid URL", "Video unavailable", "Private video",
    "No video formats found",
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
        raise ValueError(f"source_url must be an http(s) URL, got {url!r}")
    return url.strip()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # yt-dlp writes NA for fields it does not know yet


def parse_progress_line(line: str) -> FetchProgress | None:
    fields = line.strip().split()
    if len(fields) != 6 or fields[0] != PROGRESS_MARK:
        return None
    downloaded, total, estimate, speed, eta = (_number(f) for f in fields[1:])
    if downloaded is None:
        return None
    total = total or estimate
    return FetchProgress(int(downloaded), int(total) if total else None, speed, eta)


def classify_ytdlp_failure(returncode: int, stderr: list[str], max_bytes: int) -> TaskError:
    errors = [line for line in stderr if line.startswith("ERROR:")] or stderr[-5:]
    detail = errors[-1] if errors else f"yt-dlp exited with status {returncode} and no error output"
    if any("max-filesize" in line for line in stderr):
        return PermanentError(f"source is larger than MAX_UPLOAD_BYTES ({max_bytes} bytes)")
    if any(marker in line for line in errors for marker in PERMANENT_MARKERS):
        return PermanentError(f"cannot fetch source: {detail}")
    return TransientError(f"fetching source failed: {detail}")


async def fetch_url(url: str, target_dir: Path, *, max_bytes: int,
                    on_progress: FetchCallback | None = None, ffmpeg_path: str | None = None) -> Path:
    """Download `url` into `target_dir` and return the file. The process group is stopped if
    the caller is cancelled, so a cancelled job leaves no yt-dlp (or its ffmpeg) behind."""
    argv = [
        sys.executable, "-m", "yt_dlp", "--ignore-config", "--no-playlist", "--no-mtime",
        "--no-cache-dir", "--newline", "--progress", "--progress-template", PROGRESS_TEMPLATE,
        "--max-filesize", str(max_bytes), "--restrict-filenames",
        "-o", str(target_dir / "source.%(ext)s"),
    ]
    if ffmpeg_path and "/" in ffmpeg_path:
        argv += ["--ffmpeg-location", ffmpeg_path]
    argv.append(url)
    process = await start_tool(argv)
    assert process.stdout is not None and process.stderr is not None
    stderr: deque[str] = deque(maxlen=40)

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            stderr.append(raw.decode("utf-8", errors="replace").rstrip())

    reader = asyncio.create_task(read_stderr())
    try:
        async for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace")
            if "max-filesize" in line:
                stderr.append(line.strip())
            progress = parse_progress_line(line)
            if progress is not None and on_progress is not None:
                await on_progress(progress)
        await process.wait()
        await reader
    finally:
        await stop_process_group(process, grace=3.0)
        if not reader.done():
            reader.cancel()
    if process.returncode != 0:
        raise classify_ytdlp_failure(process.returncode or 0, list(stderr), max_bytes)
    if any("max-filesize" in line for line in stderr):
        # yt-dlp skips an oversized file and still exits 0.
        raise PermanentError(f"source is larger than MAX_UPLOAD_BYTES ({max_bytes} bytes)")
    files = [p for p in target_dir.iterdir()
             if p.is_file() and p.name.startswith("source.") and not p.name.endswith((".part", ".ytdl"))]
    if not files:
        raise PermanentError(f"yt-dlp finished without producing a file for {url}")
    return max(files, key=lambda p: p.stat().st_size)
