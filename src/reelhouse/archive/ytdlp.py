"""Run yt-dlp as a subprocess: progress, resume, limits, cancellation, error classes.

What vod-tender got wrong and this module does instead (reference §4.4, §12.1):
- progress is printed by yt-dlp on stdout with `--newline` and a machine-readable
  `--progress-template`, and parsed here (vod-tender read only stderr, so it never saw progress);
- resume: a stable output name plus `--continue`; yt-dlp keeps `.part`, `.part-FragN` and a
  `.ytdl` fragment index, so a restarted download fetches only what is missing;
- bounded retries inside yt-dlp (`--retries`/`--fragment-retries`), no silently skipped
  fragments, a byte cap (`DOWNLOAD_MAX_BYTES`, enforced on the running transfer because HLS
  sizes are unknown up front), and cancellation that reaches the whole process group;
- errors are classified: deleted/404, unavailable, subscriber-only/login, unsupported URL and
  bad arguments are permanent; everything else (network, 5xx, fragments) is transient;
- a worker killed with SIGKILL takes its yt-dlp with it (PR_SET_PDEATHSIG, set by a tiny
  launcher before exec), and a lock file next to the output finds and kills any survivor
  before a second yt-dlp could write the same `.part`;
- output kept for error messages is scrubbed of cookies, tokens and passwords.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError

log = logging.getLogger("reelhouse.archive.ytdlp")

PROGRESS_PREFIX = "[reelhouse-progress]"
PROGRESS_TEMPLATE = (
    f"download:{PROGRESS_PREFIX} %(progress.downloaded_bytes)s %(progress.total_bytes)s "
    "%(progress.total_bytes_estimate)s %(progress.speed)s %(progress.eta)s"
)
STOP_GRACE = 1.5  # SIGTERM -> SIGKILL; a cancel must end yt-dlp within 2 s
TAIL_LINES = 40
# Sets PR_SET_PDEATHSIG (1) to SIGKILL, then becomes yt-dlp. If the worker died between fork
# and prctl, the parent pid has changed and the launcher exits instead.
_LAUNCHER = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None,use_errno=True).prctl(1,signal.SIGKILL)\n"
    "os.getppid()==int(sys.argv[1]) or os._exit(75)\n"
    "os.execv(sys.executable,[sys.executable,'-m','yt_dlp',*sys.argv[2:]])\n"
)
_DEFAULT_LINE = re.compile(
    r"\[download\]\s+(?P<pct>[\d.]+)%\s+of\s+~?\s*(?P<size>[\d.]+)(?P<unit>[KMGT]?i?B)"
    r"(?:\s+at\s+(?P<speed>[\d.]+)(?P<sunit>[KMGT]?i?B)/s)?(?:\s+ETA\s+(?P<eta>[\d:]+))?")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
          "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
_SECRET_PATTERNS = [
    (re.compile(r"(?i)((?:cookie|set-cookie|authorization|proxy-authorization)\s*:\s*)[^\r\n]+"), r"\1<redacted>"),
    (re.compile(r"(?i)((?:^|[?&;\s])(?:token|sig|signature|auth[-_]token|access_token|client_secret|"
                r"password|api_key|key)=)[^&;\s\"']+"), r"\1<redacted>"),
]
_SECRET_FLAGS = {"-p", "--password", "-u", "--username", "--video-password", "--ap-password", "--ap-username",
                 "--twofactor", "-2", "--add-header", "--add-headers", "--cookies", "--client-certificate-password"}
# Case-insensitive substrings of yt-dlp's output that no retry can fix.
_PERMANENT = [
    ("http error 404", "VOD not found (HTTP 404): deleted or never existed"),
    ("http error 410", "VOD gone (HTTP 410)"),
    ("404: not found", "VOD not found (HTTP 404): deleted or never existed"),
    ("has been deleted", "VOD was deleted"),
    ("does not exist", "VOD does not exist"),
    ("no longer available", "VOD is no longer available"),
    ("video unavailable", "VOD is unavailable"),
    ("this video is unavailable", "VOD is unavailable"),
    ("subscriber", "VOD is subscriber-only"),
    ("must be logged in", "VOD needs a logged-in account (YTDLP_COOKIES_PATH)"),
    ("login required", "VOD needs a logged-in account (YTDLP_COOKIES_PATH)"),
    ("authentication required", "VOD needs a logged-in account (YTDLP_COOKIES_PATH)"),
    ("unsupported url", "URL not supported by yt-dlp"),
    ("is not a valid url", "invalid VOD URL"),
    ("drm protected", "VOD is DRM protected"),
    ("no video formats found", "no downloadable formats"),
    ("requested format is not available", "requested format is not available (check YTDLP_ARGS)"),
    ("yt_dlp: error:", "yt-dlp rejected its arguments (check YTDLP_ARGS)"),
    ("__main__.py: error:", "yt-dlp rejected its arguments (check YTDLP_ARGS)"),
]


def scrub(text: str) -> str:
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


@dataclass(frozen=True)
class DownloadProgress:
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


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # yt-dlp prints "NA" for unknown fields


def parse_progress_line(line: str) -> DownloadProgress | None:
    """Our template's line, or yt-dlp's default `[download] 12.3% of ~4.00MiB at ...` line
    (when YTDLP_ARGS replaced the template)."""
    line = line.strip()
    if line.startswith(PROGRESS_PREFIX):
        fields = line[len(PROGRESS_PREFIX):].split()
        if len(fields) != 5:
            return None
        done, total, estimate, speed, eta = (_number(f) for f in fields)
        if done is None and total is not None:
            done = total  # the "already downloaded" line carries the size only
        if done is None:
            return None
        return DownloadProgress(int(done), int(total or estimate or 0) or None, speed, eta, exact_total=total is not None)
    match = _DEFAULT_LINE.search(line)
    if match is None:
        return None
    size = float(match.group("size")) * _UNITS.get(match.group("unit"), 1)
    speed = float(match.group("speed")) * _UNITS.get(match.group("sunit"), 1) if match.group("speed") else None
    eta = None
    if match.group("eta"):
        eta = float(sum(int(p) * 60**i for i, p in enumerate(reversed(match.group("eta").split(":")))))
    return DownloadProgress(int(size * float(match.group("pct")) / 100), int(size), speed, eta)


@dataclass
class DownloadRequest:
    url: str
    output: Path  # stable per VOD, so `.part` files are found again after a restart
    rate_limit: str = ""
    concurrent_fragments: int = 10
    max_bytes: int = 0
    cookies_path: str = ""
    extra_args: list[str] = field(default_factory=list)
    verbose: bool = False
    retries: int = 10
    socket_timeout: float = 30.0
    ffmpeg_location: str | None = None


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    seconds: float


def build_args(req: DownloadRequest, cookies_copy: Path | None = None) -> list[str]:
    """yt-dlp's arguments (without the interpreter)."""
    args = [*req.extra_args]
    if req.verbose:
        args.append("-v")
    args += [
        "--newline", "--progress", "--progress-template", PROGRESS_TEMPLATE,
        "--print", "after_move:filepath",
        "--continue", "--no-cache-dir", "--no-mtime", "--no-playlist", "--color", "never",
        "--retries", str(req.retries), "--fragment-retries", str(req.retries),
        "--abort-on-unavailable-fragments", "--socket-timeout", str(req.socket_timeout),
        "--concurrent-fragments", str(req.concurrent_fragments),
        "--merge-output-format", "mp4",
        # Matching a URL against all ~1,900 extractors compiles as many regexes: most of
        # yt-dlp's CPU for a short VOD. Twitch VODs and plain HLS/MP4 URLs need two; YTDLP_ARGS
        # can add more (`--use-extractors default` restores them all: the lists are merged).
        "--use-extractors", "twitch:vod,generic",
    ]
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


def classify_failure(returncode: int, tail: Sequence[str]) -> TaskError:
    """Permanent only when yt-dlp itself reported an error that no retry can fix; warnings
    ("ffmpeg ... does not exist") and deaths by signal never decide it."""
    errors = [line for line in tail if "ERROR:" in line or ": error:" in line]
    headline = errors[-1].strip() if errors else f"yt-dlp exited with status {returncode}"
    detail = "\n".join(tail[-15:])[-1500:]
    if returncode > 0:
        lowered = "\n".join(errors).lower()
        for needle, meaning in _PERMANENT:
            if needle in lowered:
                return PermanentError(f"{meaning}: {headline}\nlast output:\n{detail}")
        if returncode == 2:
            return PermanentError(f"yt-dlp rejected its arguments (check YTDLP_ARGS): {headline}\nlast output:\n{detail}")
    return TransientError(f"yt-dlp failed (status {returncode}): {headline}\nlast output:\n{detail}")


# ---- process control ------------------------------------------------------------------------------

def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(process: asyncio.subprocess.Process, grace: float = STOP_GRACE) -> None:
    """SIGTERM yt-dlp's process group, SIGKILL after `grace`, and SIGKILL the group once more
    even if the leader is gone: an ffmpeg it started must not outlive it."""
    pgid = process.pid  # a session leader: its pid is the group id
    if process.returncode is None:
        _kill_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout=grace)
        except TimeoutError:
            pass
    _kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()


def _acquire_output_lock(output: Path) -> int:
    """An exclusive flock on `<output>.lock`, inherited by yt-dlp, so the lock lives exactly
    as long as some process still writes this output. The file names the worker and its
    yt-dlp; a holder whose worker is gone is a yt-dlp that outlived it and is killed, a holder
    whose worker is alive is another live download of the same VOD and is left alone."""
    lock_path = output.with_name(output.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        worker, _, child = os.pread(fd, 64, 0).decode(errors="ignore").strip().partition(":")
        if worker.isdigit() and child.isdigit():
            if _alive(int(worker)):
                os.close(fd)
                raise TransientError(f"{output.name} is being downloaded by another worker process (pid {worker})")
            if _is_downloader_for(int(child), output):
                log.warning("killing a yt-dlp (pid %s) left behind by a dead worker", child,
                            extra={"component": "vod_download"})
                _kill_group(int(child), signal.SIGKILL)
        if time.monotonic() > deadline:
            os.close(fd)
            raise TransientError(f"another process keeps {output.name} locked; will retry")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie worker is as dead as a missing one


def _is_downloader_for(pid: int, output: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(output).encode() in cmdline


def _write_holder(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}:{pid}".encode(), 0)


ProgressCallback = Callable[[DownloadProgress], Awaitable[None] | None]


async def run_download(req: DownloadRequest, on_progress: ProgressCallback | None = None,
                       *, python: str = sys.executable) -> DownloadResult:
    """Download `req.url` to `req.output`, resuming what a previous run left. Cancelling the
    caller stops yt-dlp (SIGTERM, then SIGKILL) before CancelledError propagates."""
    # Absolute, so the path yt-dlp prints back and the one in its command line (which the
    # lock's orphan check looks for) are the same string.
    req = replace(req, output=req.output.absolute())
    req.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lock_fd = await asyncio.to_thread(_acquire_output_lock, req.output)
    cookies_copy = None
    try:
        if req.cookies_path:
            cookies_copy = _private_copy(Path(req.cookies_path))
        args = build_args(req, cookies_copy)
        log.info("yt-dlp %s", " ".join(redact_argv(args)), extra={"component": "vod_download"})
        process = await asyncio.create_subprocess_exec(
            python, "-c", _LAUNCHER, str(os.getpid()), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, pass_fds=(lock_fd,),
            # glibc gives each fragment thread its own malloc arena and rarely returns memory
            # from them; two arenas keep yt-dlp's resident size ~15% lower at 10 fragments.
            env={"MALLOC_ARENA_MAX": "2", **os.environ},
        )
        _write_holder(lock_fd, process.pid)
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        final_path: list[str] = []
        too_big: list[int] = []
        try:
            await asyncio.gather(
                _read_stdout(process, req, tail, final_path, too_big, on_progress),
                _read_lines(process.stderr, tail),
                process.wait(),
            )
        finally:
            await asyncio.shield(stop_group(process))
        if too_big:
            raise PermanentError(f"download exceeds DOWNLOAD_MAX_BYTES ({req.max_bytes} bytes): "
                                 f"{too_big[0]} bytes fetched")
        if process.returncode != 0:
            raise classify_failure(process.returncode or -1, list(tail))
        path = Path(final_path[-1]) if final_path else req.output
        if not path.is_file():
            if any("larger than max-filesize" in line for line in tail):
                raise PermanentError(f"VOD is larger than DOWNLOAD_MAX_BYTES ({req.max_bytes} bytes)")
            raise TransientError(f"yt-dlp exited 0 but {path.name} does not exist\nlast output:\n"
                                 + "\n".join(list(tail)[-10:]))
        with contextlib.suppress(FileNotFoundError):
            req.output.with_name(req.output.name + ".lock").unlink()
        return DownloadResult(path, path.stat().st_size, time.monotonic() - started)
    finally:
        os.close(lock_fd)
        if cookies_copy is not None:
            with contextlib.suppress(FileNotFoundError):
                cookies_copy.unlink()


def _private_copy(source: Path) -> Path:
    """yt-dlp writes cookies back to the file it was given: hand it a 0600 copy, so the
    operator's file is never modified and other users cannot read it."""
    if not source.is_file():
        raise PermanentError(f"YTDLP_COOKIES_PATH {source} does not exist")
    fd, name = tempfile.mkstemp(prefix="ytdlp-cookies-", suffix=".txt")
    with os.fdopen(fd, "wb") as copy:
        copy.write(source.read_bytes())
    return Path(name)


async def _read_lines(stream: asyncio.StreamReader | None, tail: deque[str]) -> None:
    if stream is None:
        return
    while line := await stream.readline():
        text = scrub(line.decode("utf-8", errors="replace").rstrip())
        if text:
            tail.append(text)


async def _read_stdout(process: asyncio.subprocess.Process, req: DownloadRequest, tail: deque[str],
                       final_path: list[str], too_big: list[int], on_progress: ProgressCallback | None) -> None:
    assert process.stdout is not None
    best = 0
    while line := await process.stdout.readline():
        text = line.decode("utf-8", errors="replace").rstrip()
        progress = parse_progress_line(text)
        if progress is None:
            if text.startswith(f"{req.output.parent}/") and Path(text).stem == req.output.stem:
                final_path.append(text)  # from --print after_move:filepath
            elif text:
                tail.append(scrub(text))
            continue
        # Concurrent fragments report out of order; never show the bar going backwards.
        best = max(best, progress.downloaded_bytes)
        progress = DownloadProgress(best, progress.total_bytes, progress.speed, progress.eta, progress.exact_total)
        if req.max_bytes and best > req.max_bytes and not too_big:
            too_big.append(best)
            await stop_group(process)
            return
        if on_progress is not None:
            result = on_progress(progress)
            if inspect.isawaitable(result):
                await result


def partial_files(output: Path) -> list[Path]:
    """What an unfinished download of `output` leaves: `.part`, `.part-FragN[.part]`, `.ytdl`,
    the lock file (yt-dlp's own names)."""
    prefix = output.name + "."
    if not output.parent.is_dir():
        return []
    return [p for p in output.parent.iterdir()
            if p.name.startswith(prefix) and (p.name[len(prefix):].startswith(("part", "ytdl", "lock", "temp")))]


def discard_partial_files(output: Path) -> int:
    """Remove a failed download's leftovers (a permanent failure will not resume them)."""
    removed = 0
    for path in partial_files(output):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
