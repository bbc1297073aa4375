"""Long-running ffmpeg processes for live work: they die with their worker (PR_SET_PDEATHSIG,
so a SIGKILLed worker leaves no ffmpeg pulling from the ingest), are stopped as a group, and
report how far they got from `-progress`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import re
import signal
from collections import deque
from collections.abc import Sequence

from reelhouse.core.jobs.errors import TransientError
from reelhouse.core.media.probe import MediaInfo, media_info_from_ffprobe
from reelhouse.core.media.process import stop_process_group

PR_SET_PDEATHSIG = 1
_SECRETISH = re.compile(r"(rtmps?://[^\s/]+/[^\s]*?/)([^\s/:]+)")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


async def spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl between fork and exec
        )
    except FileNotFoundError:
        raise TransientError(f"{argv[0]!r} not found (check FFMPEG_PATH)") from None


def scrub(text: str) -> str:
    """Drop what looks like a stream key from ffmpeg's messages (the last path part of an RTMP URL)."""
    return _SECRETISH.sub(r"\1***", text)


class LiveProcess:
    """An ffmpeg with its progress (out_time) and a bounded stderr tail."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out_time = 0.0
        self.tail: deque[str] = deque(maxlen=20)
        self._readers = [asyncio.create_task(self._progress()), asyncio.create_task(self._stderr())]

    @classmethod
    async def start(cls, argv: Sequence[str]) -> LiveProcess:
        return cls(await spawn(argv))

    async def _progress(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw[:4096].decode(errors="replace").strip()
            if line.startswith("out_time_us="):
                with contextlib.suppress(ValueError):
                    self.out_time = max(self.out_time, int(line.split("=", 1)[1]) / 1e6)

    async def _stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.tail.append(scrub(raw[:2000].decode(errors="replace").rstrip()))

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def error_text(self) -> str:
        lines = [line for line in self.tail if line]
        return (" | ".join(lines[-3:]) or f"ffmpeg exited with {self.process.returncode}")[:480]

    async def wait(self, timeout: float | None = None) -> int | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)
        return self.process.returncode

    async def stop(self, grace: float = 3.0) -> None:
        try:
            await stop_process_group(self.process, grace)
        finally:
            for reader in self._readers:
                reader.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)


async def probe_live(ffprobe: str, url: str, timeout_us: int) -> MediaInfo:
    """What the publisher sends (streams, size, frame rate), read from the ingest."""
    argv = [
        ffprobe, "-hide_banner", "-v", "error", "-rw_timeout", str(timeout_us),
        "-analyzeduration", "1000000", "-probesize", "500000",
        "-show_streams", "-show_format", "-of", "json", url,
    ]  # fmt: skip
    process = await spawn(argv)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_us / 1e6 + 10)
    except TimeoutError:
        await stop_process_group(process, 1.0)
        raise TransientError("ffprobe of the live input timed out") from None
    if process.returncode != 0:
        raise TransientError(f"ffprobe of the live input failed: {scrub(stderr.decode(errors='replace'))[-300:]}")
    return media_info_from_ffprobe(url, json.loads(stdout or b"{}"))
