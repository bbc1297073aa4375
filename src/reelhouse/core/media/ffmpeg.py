"""Run ffmpeg with machine-readable progress, bounded error output, and real cancellation.

ffmpeg writes `key=value` lines on `-progress pipe:1`, one block per report ending in
`progress=continue|end`. We turn each block into a `Progress`, hand it to the caller at most
every `PROGRESS_SAVE_INTERVAL` seconds (it usually lands in the database), and keep the last
lines of stderr so a failure says why (WebEncode lost both: its parser ate stderr and dropped
most updates).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.media.failures import (
    classify_failure,
    input_paths,
    is_unreported_failure,
    unreported_failure,
)
from reelhouse.core.media.process import (
    DEFAULT_STOP_GRACE,
    start_tool,
    stop_process_group,
)

STDERR_TAIL_LINES = 50


@dataclass(frozen=True, slots=True)
class Progress:
    out_time: float
    """Seconds of output written so far."""
    percent: float | None
    """0..100 against the known input duration; None when the duration is unknown."""
    fps: float | None
    speed: float | None
    """Media seconds encoded per wall-clock second (ffmpeg's `speed=1.5x`)."""
    eta_seconds: float | None
    frame: int | None
    finished: bool = False


ProgressCallback = Callable[[Progress], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FfmpegResult:
    argv: list[str]
    elapsed: float
    stderr_tail: list[str]
    last_progress: Progress | None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip().rstrip("x").strip()
    try:
        number = float(value)
    except ValueError:
        return None  # ffmpeg prints N/A before the first frame is out
    return number


class ProgressParser:
    """Accumulates `-progress` lines; `feed` returns a `Progress` when a block is complete."""

    def __init__(self, duration: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.duration = duration if duration and duration > 0 else None
        self._clock = clock
        self._started = clock()
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> Progress | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        if key != "progress":
            self._fields[key] = value
            return None
        fields, self._fields = self._fields, {}
        return self._build(fields, finished=value.strip() == "end")

    def _build(self, fields: dict[str, str], *, finished: bool) -> Progress:
        out_us = _number(fields.get("out_time_us")) or _number(fields.get("out_time_ms"))
        out_time = max(out_us or 0.0, 0.0) / 1_000_000
        speed = _number(fields.get("speed"))
        if not speed:
            # ffmpeg reports speed 0x for the first reports; our own wall clock is a better guess.
            elapsed = self._clock() - self._started
            speed = out_time / elapsed if elapsed > 0 and out_time > 0 else None
        percent = eta = None
        if self.duration:
            percent = min(out_time / self.duration * 100.0, 100.0)
            remaining = max(self.duration - out_time, 0.0)
            eta = remaining / speed if speed else None
        frame = _number(fields.get("frame"))
        return Progress(
            out_time=out_time,
            percent=percent,
            fps=_number(fields.get("fps")),
            speed=speed,
            eta_seconds=eta,
            frame=int(frame) if frame is not None else None,
            finished=finished,
        )


def completed(progress: Progress | None, duration: float | None) -> Progress:
    """The report sent once a run succeeded: ffmpeg's last block often stops a frame short of the
    duration, and a finished job should read 100 %."""
    base = progress or Progress(
        out_time=duration or 0.0, percent=None, fps=None, speed=None, eta_seconds=None, frame=None
    )
    return replace(base, percent=100.0 if duration else base.percent, eta_seconds=0.0, finished=True)


async def _read_stderr(stream: asyncio.StreamReader, tail: deque[str], flagged: list[str]) -> None:
    async for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not line:
            continue
        tail.append(line)
        # Kept apart from the tail, which a long run of warnings could scroll them out of.
        if is_unreported_failure(line) and len(flagged) < 10:
            flagged.append(line)


async def run_ffmpeg(
    args: Sequence[str],
    *,
    duration: float | None = None,
    on_progress: ProgressCallback | None = None,
    settings: MediaSettings | None = None,
    cancel_grace: float = DEFAULT_STOP_GRACE,
    allow_truncated_input: bool = False,
) -> FfmpegResult:
    """Run `ffmpeg <args>` (inputs, filters, outputs; no binary name) to completion.

    Raises `PermanentError`/`TransientError` on failure (see `failures.classify_failure`), also
    when ffmpeg exits 0 after a write error or on a truncated input (unless
    `allow_truncated_input`).
    Cancelling the awaiting task stops ffmpeg (SIGTERM, SIGKILL after `cancel_grace` seconds)
    before the `CancelledError` propagates.
    """
    settings = settings or get_settings().media
    # -y: a retried task overwrites what a failed attempt left; -nostdin: no terminal games.
    argv = [
        settings.ffmpeg_path,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        "-progress",
        "pipe:1",
        "-y",
        *args,
    ]
    parser = ProgressParser(duration)
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    flagged: list[str] = []
    last_progress: Progress | None = None
    last_report = float("-inf")
    started = time.monotonic()

    process = await start_tool(argv)
    assert process.stdout is not None and process.stderr is not None
    stderr_task = asyncio.create_task(_read_stderr(process.stderr, tail, flagged))
    try:
        async for raw in process.stdout:
            progress = parser.feed(raw.decode("utf-8", errors="replace"))
            if progress is None:
                continue
            last_progress = progress
            now = time.monotonic()
            if on_progress and not progress.finished and now - last_report >= settings.progress_save_interval:
                last_report = now
                await on_progress(progress)
        await process.wait()
        await stderr_task
    finally:
        await stop_process_group(process, cancel_grace)
        if not stderr_task.done():
            stderr_task.cancel()

    returncode = process.returncode
    assert returncode is not None
    if returncode != 0:
        raise classify_failure("ffmpeg", returncode, list(tail), inputs=input_paths(args))
    if failure := unreported_failure("ffmpeg", flagged, allow_truncated_input=allow_truncated_input):
        raise failure
    final = completed(last_progress, parser.duration)
    if on_progress:
        await on_progress(final)
    return FfmpegResult(argv=argv, elapsed=time.monotonic() - started, stderr_tail=list(tail), last_progress=final)
