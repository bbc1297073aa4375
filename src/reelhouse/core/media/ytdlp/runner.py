"""Run yt-dlp as a subprocess: progress, resume, size and memory bounds, cancellation.

- progress: our `--progress-template` on stdout (output.py), at most every PROGRESS_DELTA s;
- resume: a stable output name plus `--continue`; yt-dlp keeps `.part`, `.part-FragN` and a
  `.ytdl` fragment index (aria2c: `.part-FragN.aria2c` files), so a restarted download fetches
  only what is missing;
- bounds: retries inside yt-dlp, no silently skipped fragments, `max_bytes` enforced on the
  running transfer (HLS sizes are unknown up front), every line read bounded, the output tail
  bounded, one malloc arena for yt-dlp;
- stopping: yt-dlp leads its own process group (with aria2c, ffmpeg, ffprobe under it); a
  cancelled caller SIGTERMs the group, SIGKILLs it after STOP_GRACE and once more when the
  leader is gone; a worker killed with SIGKILL takes yt-dlp with it (run_yt_dlp.py) and the
  output lock (lock.py) kills any survivor before a second yt-dlp writes the same files;
- aria2c, when installed and asked for, fetches HLS fragments (run_yt_dlp.py says why and how);
- errors: the runner's own (errors.py); output kept for messages is scrubbed of secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from reelhouse.core.media.process import stop_process_group
from reelhouse.core.media.ytdlp.errors import (
    TOO_LARGE_MARKER,
    Cause,
    YtdlpRejected,
    YtdlpTooLarge,
    YtdlpTransient,
    classify_failure,
)
from reelhouse.core.media.ytdlp.lock import acquire_output_lock, lock_path, record_holder
from reelhouse.core.media.ytdlp.output import (
    DOWNLOADER_PREFIX,
    FILE_PREFIX,
    FILE_TEMPLATE,
    PROGRESS_TEMPLATE,
    YtdlpProgress,
    parse_progress_line,
    redact_argv,
    scrub,
)

log = logging.getLogger("reelhouse.core.media.ytdlp")

Downloader = Literal["aria2c", "native"]
CHILD = Path(__file__).with_name("run_yt_dlp.py")
STOP_GRACE = 1.5  # SIGTERM -> SIGKILL; a cancel must end yt-dlp within 2 s
PROGRESS_DELTA = 0.5  # seconds between yt-dlp's progress lines
TAIL_LINES = 40
LINE_LIMIT = 64 * 1024  # a longer line is dropped, not buffered

ProgressCallback = Callable[[YtdlpProgress], Awaitable[None] | None]


@dataclass(frozen=True)
class YtdlpRequest:
    url: str
    output: Path  # a path or a yt-dlp template (`source.%(ext)s`); stable, so `.part` files are found again
    max_bytes: int = 0  # 0: no limit
    rate_limit: str = ""  # yt-dlp's --limit-rate (500K, 4M)
    concurrent_fragments: int = 10
    retries: int = 10
    socket_timeout: float = 30.0
    cookies_path: str = ""
    extra_args: Sequence[str] = ()  # placed first, so our own options win
    verbose: bool = False
    ffmpeg_location: str | None = None
    extractors: str | None = None  # --use-extractors; None: all of yt-dlp's
    merge_output_format: str | None = None
    restrict_filenames: bool = False
    downloader: Downloader = "aria2c"  # aria2c for HLS fragments when installed; "native": never
    proxy: str | None = None  # every connection through it (the SSRF guard for user-given URLs)


@dataclass(frozen=True)
class YtdlpResult:
    path: Path
    size: int
    seconds: float
    downloader: Downloader = "native"  # who fetched it: "aria2c" only when aria2c really took over


def find_aria2c() -> str | None:
    return shutil.which("aria2c")


def build_args(req: YtdlpRequest, cookies_copy: Path | None = None) -> list[str]:
    """yt-dlp's arguments (after the interpreter and run_yt_dlp.py's own)."""
    args = [*req.extra_args]
    if req.verbose:
        args.append("-v")
    args += [
        "--ignore-config",  # a yt-dlp config file on the host must not change what we parse
        "--newline",
        "--progress",
        "--progress-template",
        PROGRESS_TEMPLATE,
        "--progress-delta",
        str(PROGRESS_DELTA),
        "--print",
        FILE_TEMPLATE,
        "--no-quiet",  # --print implies --quiet, which hides "File is larger than max-filesize"
        "--continue",
        "--no-cache-dir",
        "--no-mtime",
        "--no-playlist",
        "--color",
        "never",
        "--retries",
        str(req.retries),
        "--fragment-retries",
        str(req.retries),
        "--abort-on-unavailable-fragments",
        "--socket-timeout",
        str(req.socket_timeout),
        "--concurrent-fragments",
        str(req.concurrent_fragments),
    ]
    if req.proxy:
        args += ["--proxy", req.proxy]  # aria2c's fragments take it too (run_yt_dlp.py)
    if req.extractors:
        args += ["--use-extractors", req.extractors]
    if req.merge_output_format:
        args += ["--merge-output-format", req.merge_output_format]
    if req.restrict_filenames:
        args.append("--restrict-filenames")
    ffmpeg = shutil.which(req.ffmpeg_location or "ffmpeg")  # yt-dlp wants a path, not a name
    if ffmpeg:
        args += ["--ffmpeg-location", ffmpeg]
    if req.rate_limit:
        args += ["--limit-rate", req.rate_limit]
    if req.max_bytes:
        args += ["--max-filesize", str(req.max_bytes)]
    if cookies_copy is not None:
        args += ["--cookies", str(cookies_copy)]
    return [*args, "-o", str(req.output), req.url]


class _Run:
    """What one run's output readers found."""

    def __init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.final_path: Path | None = None
        self.too_big: int | None = None
        self.aria2c = False
        self.best = 0


async def run_ytdlp(
    req: YtdlpRequest, on_progress: ProgressCallback | None = None, *, python: str = sys.executable
) -> YtdlpResult:
    """Download `req.url` to `req.output`, resuming what a previous run left. Cancelling the
    caller stops yt-dlp and everything it started before CancelledError propagates."""
    # Absolute, so the path yt-dlp prints back and the one in its command line (which the
    # lock's orphan check looks for) are the same string.
    req = replace(req, output=req.output.absolute())
    req.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lock_fd = await asyncio.to_thread(acquire_output_lock, req.output)
    cookies_copy = None
    try:
        if req.cookies_path:
            cookies_copy = _private_copy(Path(req.cookies_path))
        aria2c = find_aria2c() if req.downloader == "aria2c" else None
        args = build_args(req, cookies_copy)
        fragments_by = f"aria2c ({aria2c})" if aria2c else "yt-dlp itself"
        log.info("yt-dlp, HLS fragments by %s: %s", fragments_by, " ".join(redact_argv(args)))
        child = [str(os.getpid()), *(["--aria2c", aria2c] if aria2c else []), "--"]
        process = await asyncio.create_subprocess_exec(
            python,
            "-P",  # not the script's directory on sys.path: its siblings are not top-level modules
            str(CHILD),
            *child,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=(lock_fd,),
            limit=LINE_LIMIT,
            # glibc gives each fragment thread its own malloc arena and rarely returns memory
            # from them; with one arena yt-dlp's own downloader peaks ~10% lower at 10 fragments
            # (60 vs 66 MB on the 2 GB bench), and its threads mostly wait on sockets anyway.
            env={"MALLOC_ARENA_MAX": "1", **os.environ},
        )
        record_holder(lock_fd, process.pid)
        run = _Run()
        try:
            await asyncio.gather(_read_stdout(process, req, run, on_progress), _read_stderr(process, run))
            await process.wait()
        finally:
            await stop_process_group(process, STOP_GRACE)
        return _outcome(req, run, process.returncode, time.monotonic() - started)
    finally:
        os.close(lock_fd)
        if cookies_copy is not None:
            cookies_copy.unlink(missing_ok=True)


def _outcome(req: YtdlpRequest, run: _Run, returncode: int | None, seconds: float) -> YtdlpResult:
    tail = list(run.tail)
    if run.too_big is not None:
        raise YtdlpTooLarge(
            f"the download exceeds its limit of {req.max_bytes} bytes ({run.too_big} bytes fetched)", Cause.TOO_LARGE
        )
    if returncode != 0:
        raise classify_failure(returncode if returncode is not None else -1, tail)
    path = run.final_path or req.output
    if not path.is_file():
        if any(TOO_LARGE_MARKER in line for line in tail):
            raise YtdlpTooLarge(f"the download is larger than its limit of {req.max_bytes} bytes", Cause.TOO_LARGE)
        raise YtdlpTransient(
            f"yt-dlp exited 0 but {path.name} does not exist", Cause.NO_OUTPUT, detail="\n".join(tail[-10:])
        )
    lock_path(req.output).unlink(missing_ok=True)
    for leftover in partial_files(path):  # a native run's `.ytdl` after an aria2c run finished, ...
        leftover.unlink(missing_ok=True)
    return YtdlpResult(path, path.stat().st_size, seconds, "aria2c" if run.aria2c else "native")


def _private_copy(source: Path) -> Path:
    """yt-dlp writes cookies back to the file it was given: hand it a 0600 copy, so the
    operator's file is never modified and other users cannot read it."""
    if not source.is_file():
        raise YtdlpRejected(f"the cookies file {source} does not exist", Cause.COOKIES_MISSING)
    fd, name = tempfile.mkstemp(prefix="ytdlp-cookies-", suffix=".txt")
    with os.fdopen(fd, "wb") as copy:
        copy.write(source.read_bytes())
    return Path(name)


async def _lines(stream: asyncio.StreamReader | None) -> AsyncIterator[str]:
    if stream is None:
        return
    while True:
        try:
            raw = await stream.readline()
        except ValueError:
            continue  # longer than LINE_LIMIT: asyncio dropped it, go on with the next
        if not raw:
            return
        yield raw.decode("utf-8", errors="replace").rstrip()


async def _read_stderr(process: asyncio.subprocess.Process, run: _Run) -> None:
    async for text in _lines(process.stderr):
        if text:
            run.tail.append(scrub(text))


async def _read_stdout(
    process: asyncio.subprocess.Process, req: YtdlpRequest, run: _Run, on_progress: ProgressCallback | None
) -> None:
    async for text in _lines(process.stdout):
        progress = parse_progress_line(text)
        if progress is None:
            if text.startswith(FILE_PREFIX):
                run.final_path = Path(text[len(FILE_PREFIX) :])
            elif text.startswith(DOWNLOADER_PREFIX):
                run.aria2c = True
            elif text:
                run.tail.append(scrub(text))
            continue
        # Concurrent fragments report out of order; never show the bar going backwards.
        run.best = max(run.best, progress.downloaded_bytes)
        progress = replace(progress, downloaded_bytes=run.best)
        if req.max_bytes and run.best > req.max_bytes and run.too_big is None:
            run.too_big = run.best
            await stop_process_group(process, STOP_GRACE)
            return
        if on_progress is not None:
            result = on_progress(progress)
            if inspect.isawaitable(result):
                await result


def partial_files(output: Path) -> list[Path]:
    """What an unfinished download of `output` leaves: `.part`, `.part-FragN[.part|.aria2c]`,
    aria2c's `.aria2` control files, `.ytdl`, the lock file, ffmpeg's `.temp` files."""
    prefix = output.name + "."
    if not output.parent.is_dir():
        return []
    return [
        p
        for p in output.parent.iterdir()
        if p.name.startswith(prefix) and (p.name[len(prefix) :].startswith(("part", "ytdl", "lock", "temp")))
    ]


def discard_partial_files(output: Path) -> int:
    """Remove a failed download's leftovers (a permanent failure will not resume them)."""
    removed = 0
    for path in partial_files(output):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
