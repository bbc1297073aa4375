"""Start ffmpeg/ffprobe in their own process group and never leave one behind.

Every media tool runs as the leader of a new session, so a stop signal reaches it and anything
it spawned, and a worker that is cancelled or times out does not leak encoders eating the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from reelhouse.core.jobs.errors import TransientError

DEFAULT_STOP_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class ToolOutput:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


async def start_tool(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """Spawn `argv` with piped stdout/stderr and no stdin, as a new process-group leader."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        # A missing binary is this worker's problem, not the media's: another worker may have it.
        raise TransientError(f"{argv[0]!r} not found (check FFMPEG_PATH / FFPROBE_PATH)") from None
    except PermissionError:
        raise TransientError(f"{argv[0]!r} is not executable") from None


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def stop_process_group(process: asyncio.subprocess.Process, grace: float = DEFAULT_STOP_GRACE) -> None:
    """SIGTERM the group (ffmpeg then finishes its current packet and exits), SIGKILL after `grace`,
    and SIGKILL the group once more when the leader is gone: a helper it started (yt-dlp's
    aria2c or ffmpeg) must not outlive it.

    Safe to call when the process already exited. If the caller is cancelled again while waiting
    out the grace period, the group is killed at once and the cancellation propagates.
    """
    if process.returncode is not None:
        _signal_group(process, signal.SIGKILL)
        return
    _signal_group(process, signal.SIGTERM)
    cancelled_while_waiting = False
    try:
        await asyncio.wait_for(process.wait(), timeout=grace)
    except TimeoutError:
        pass
    except asyncio.CancelledError:
        cancelled_while_waiting = True
    _signal_group(process, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()
    if cancelled_while_waiting:
        raise asyncio.CancelledError()


async def run_tool(argv: Sequence[str], *, grace: float = 2.0) -> ToolOutput:
    """Run a short-lived tool (ffprobe, capability checks) to completion and capture its output."""
    process = await start_tool(argv)
    try:
        stdout, stderr = await process.communicate()
    finally:
        await stop_process_group(process, grace)
    assert process.returncode is not None
    return ToolOutput(process.returncode, stdout, stderr)
