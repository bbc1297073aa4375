"""One writer per output: a lock file next to it, held by yt-dlp itself.

A worker killed with SIGKILL takes its yt-dlp with it (PR_SET_PDEATHSIG, set in run_yt_dlp.py),
but between fork and prctl, or if that fails, a yt-dlp could outlive it. Before a second yt-dlp
could write the same `.part` files, the lock finds such a survivor and kills it; a holder whose
worker is alive is another live download of the same output and is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
from pathlib import Path

from reelhouse.core.media.ytdlp.errors import Cause, YtdlpTransient

log = logging.getLogger("reelhouse.core.media.ytdlp")

LOCK_WAIT = 10.0  # seconds for a dying holder to let go


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


def acquire_output_lock(output: Path) -> int:
    """An exclusive flock on `<output>.lock`, to be inherited by yt-dlp (pass_fds), so the lock
    lives exactly as long as some process still writes this output. Blocking: run in a thread."""
    fd = os.open(lock_path(output), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        with contextlib.suppress(BlockingIOError):  # held: see by whom below
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        worker, _, child = os.pread(fd, 64, 0).decode(errors="ignore").strip().partition(":")
        if worker.isdigit() and child.isdigit():
            if _alive(int(worker)):
                os.close(fd)
                raise YtdlpTransient(
                    f"{output.name} is being downloaded by another worker process (pid {worker})", Cause.BUSY
                )
            if _is_downloader_for(int(child), output):
                log.warning("killing a yt-dlp (pid %s) left behind by a dead worker", child)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(child), signal.SIGKILL)
        if time.monotonic() > deadline:
            os.close(fd)
            raise YtdlpTransient(f"another process keeps {output.name} locked", Cause.BUSY)
        time.sleep(0.1)


def record_holder(fd: int, pid: int) -> None:
    """Write `<worker pid>:<yt-dlp pid>` into the lock file for the next acquirer to judge."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}:{pid}".encode(), 0)


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
    return any(str(output).encode() in part for part in cmdline)
