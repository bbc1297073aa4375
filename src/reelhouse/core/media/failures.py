"""Turn an ffmpeg/ffprobe failure (exit status + stderr) into retry-or-fail for the job engine.

Retrying a corrupt file or a missing encoder burns attempts for nothing (WebEncode's workers
spun forever on those); a full disk or a killed process is worth another try later.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Sequence

from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError

# Lines ffmpeg's demuxers and decoders print when the *input* cannot be read as media.
CORRUPT_INPUT_MARKERS = (
    "Invalid data found when processing input",
    "moov atom not found",
    "EBML header parsing failed",
    "Could not find codec parameters",
    "could not find codec parameters",
    "partial file",
    "Invalid NAL unit size",
    "no frame!",
    "does not contain any stream",
)
DISK_FULL_MARKERS = ("No space left on device", "Disk quota exceeded")
OUT_OF_MEMORY_MARKERS = ("Cannot allocate memory",)
UNKNOWN_CODEC_MARKERS = ("Unknown encoder", "Encoder not found", "Unknown decoder", "Decoder not found")
MISSING_FILE_MARKER = "No such file or directory"

# "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55df3eddd1c0] moov atom not found" -> "[mov,mp4,m4a,3gp,3g2,mj2] moov ..."
_CONTEXT_ADDRESS = re.compile(r"\s@\s0x[0-9a-fA-F]+\]")


def clean_stderr_line(line: str) -> str:
    """Drop the heap address ffmpeg prints in log prefixes: it differs on every run and means nothing."""
    return _CONTEXT_ADDRESS.sub("]", line.rstrip())


def _first_line_with(lines: Sequence[str], markers: Iterable[str]) -> str | None:
    markers = tuple(markers)
    for line in lines:
        if any(marker in line for marker in markers):
            return line
    return None


def input_paths(args: Sequence[str]) -> list[str]:
    """The values passed to `-i` in an ffmpeg/ffprobe argument list."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-i"]


def classify_failure(
    tool: str,
    returncode: int,
    stderr_lines: Sequence[str],
    *,
    inputs: Sequence[str] = (),
) -> TaskError:
    """Build the error a failed run should raise; `inputs` lets a missing input be told apart from
    a missing output directory (the former cannot get better, the latter can)."""
    lines = [clean_stderr_line(line) for line in stderr_lines if line.strip()]
    tail = "\n".join(lines[-15:])

    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return TransientError(f"{tool} was killed by {name}{hint}" + (f"\n{tail}" if tail else ""))

    if line := _first_line_with(lines, DISK_FULL_MARKERS):
        return TransientError(f"disk full while running {tool}: {line}")
    if line := _first_line_with(lines, OUT_OF_MEMORY_MARKERS):
        return TransientError(f"{tool} ran out of memory: {line}")
    if line := _first_line_with(lines, UNKNOWN_CODEC_MARKERS):
        return PermanentError(f"{tool} cannot use the requested codec: {line}")
    if line := _first_line_with(lines, CORRUPT_INPUT_MARKERS):
        named = f" {', '.join(inputs)}" if inputs else ""
        return PermanentError(f"corrupt or unreadable input{named}: {line}")
    for path in inputs:
        # ffmpeg reports a failure to open an input as "<input>: <strerror>".
        opened = _first_line_with(lines, (f"{path}: ",))
        if opened is None:
            continue
        message = opened.split(f"{path}: ", 1)[1]
        if MISSING_FILE_MARKER in message:
            return PermanentError(f"input file not found: {path}")
        if "Permission denied" in message:
            return TransientError(f"cannot read input {path}: {message}")
        return PermanentError(f"corrupt or unreadable input {path}: {message}")
    return TransientError(
        f"{tool} exited with status {returncode}" + (f":\n{tail}" if tail else " and no error output")
    )


# Lines that mean the run failed even though ffmpeg exited 0: it encodes what it can read of a
# truncated input ("partial file"), and ignores errors writing the trailer or closing the output
# (a full disk). A silently short or broken output is worse than a failure.
UNREPORTED_FAILURE_MARKERS = ("partial file", "Error writing trailer", "Error closing file", *DISK_FULL_MARKERS)


def is_unreported_failure(line: str) -> bool:
    return any(marker in line for marker in UNREPORTED_FAILURE_MARKERS)


def unreported_failure(tool: str, lines: Sequence[str], *, allow_truncated_input: bool = False) -> TaskError | None:
    """The error for a run that exited 0 but printed one of `UNREPORTED_FAILURE_MARKERS`."""
    lines = [clean_stderr_line(line) for line in lines]
    if line := _first_line_with(lines, DISK_FULL_MARKERS):
        return TransientError(f"disk full while running {tool}: {line}")
    if line := _first_line_with(lines, ("Error writing trailer", "Error closing file")):
        return TransientError(f"{tool} could not finish writing its output: {line}")
    if not allow_truncated_input and (line := _first_line_with(lines, ("partial file",))):
        return PermanentError(f"input is truncated: {line}")
    return None
