"""Parsing ffmpeg's -progress blocks and classifying failures from stderr (no ffmpeg run)."""

from __future__ import annotations

import pytest

from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.media.failures import (
    classify_failure,
    clean_stderr_line,
    input_paths,
    unreported_failure,
)
from reelhouse.core.media.ffmpeg import Progress, ProgressParser, completed

# Two reports as ffmpeg 5.1 writes them on -progress pipe:1.
FIRST_BLOCK = """frame=0
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=48
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
"""
SECOND_BLOCK = """frame=450
fps=89.91
stream_0_0_q=28.0
bitrate= 773.2kbits/s
total_size=1433600
out_time_us=15000000
out_time_ms=15000000
out_time=00:00:15.000000
dup_frames=0
drop_frames=0
speed=2.5x
progress=continue
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed(parser: ProgressParser, block: str) -> list[Progress]:
    return [p for line in block.splitlines() if (p := parser.feed(line + "\n")) is not None]


def test_a_report_is_emitted_per_block() -> None:
    parser = ProgressParser(duration=60.0)
    first = feed(parser, FIRST_BLOCK)
    second = feed(parser, SECOND_BLOCK)

    assert len(first) == 1 and len(second) == 1
    assert first[0] == Progress(out_time=0.0, percent=0.0, fps=0.0, speed=None, eta_seconds=None, frame=0)
    report = second[0]
    assert report.out_time == 15.0 and report.percent == 25.0
    assert (report.fps, report.speed, report.frame) == (89.91, 2.5, 450)
    assert report.eta_seconds == pytest.approx(45.0 / 2.5)
    assert report.finished is False


def test_end_block_is_marked_finished_and_percent_is_capped() -> None:
    parser = ProgressParser(duration=10.0)
    (report,) = feed(parser, SECOND_BLOCK.replace("progress=continue", "progress=end"))
    assert report.finished and report.percent == 100.0 and report.eta_seconds == 0.0


def test_unknown_duration_gives_no_percent_or_eta() -> None:
    (report,) = feed(ProgressParser(duration=None), SECOND_BLOCK)
    assert report.percent is None and report.eta_seconds is None and report.out_time == 15.0


def test_speed_is_estimated_from_the_wall_clock_while_ffmpeg_reports_0x() -> None:
    clock = FakeClock()
    parser = ProgressParser(duration=60.0, clock=clock)
    clock.now += 10.0  # 15 s of media in 10 s of wall time
    (report,) = feed(parser, SECOND_BLOCK.replace("speed=2.5x", "speed=   0x"))
    assert report.speed == pytest.approx(1.5)
    assert report.eta_seconds == pytest.approx(45.0 / 1.5)


def test_completed_report_reads_100_percent() -> None:
    short_of_the_end = Progress(out_time=19.96, percent=99.8, fps=30.0, speed=2.0, eta_seconds=0.02, frame=599)
    final = completed(short_of_the_end, 20.0)
    assert (final.percent, final.eta_seconds, final.finished, final.frame) == (100.0, 0.0, True, 599)
    assert completed(None, None).percent is None


def test_garbage_lines_are_ignored() -> None:
    parser = ProgressParser(duration=10.0)
    assert parser.feed("\n") is None
    assert parser.feed("not a key value line\n") is None


MOOV = [
    "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55df3eddd1c0] moov atom not found",
    "in.mp4: Invalid data found when processing input",
]


def test_corrupt_input_is_permanent_and_named() -> None:
    error = classify_failure("ffmpeg", 1, MOOV, inputs=["in.mp4"])
    assert isinstance(error, PermanentError)
    assert error.reason == "corrupt or unreadable input in.mp4: [mov,mp4,m4a,3gp,3g2,mj2] moov atom not found"


def test_disk_full_is_transient_even_alongside_other_errors() -> None:
    lines = [
        "av_interleaved_write_frame(): No space left on device",
        "Error writing trailer of out.ts: Invalid argument",
    ]
    error = classify_failure("ffmpeg", 1, lines)
    assert isinstance(error, TransientError)
    assert error.reason == "disk full while running ffmpeg: av_interleaved_write_frame(): No space left on device"


def test_unknown_encoder_is_permanent() -> None:
    error = classify_failure("ffmpeg", 1, ["Unknown encoder 'h264_foo'"])
    assert isinstance(error, PermanentError) and "Unknown encoder 'h264_foo'" in error.reason


def test_missing_input_vs_missing_output_directory() -> None:
    missing_input = classify_failure("ffmpeg", 1, ["in.mp4: No such file or directory"], inputs=["in.mp4"])
    assert isinstance(missing_input, PermanentError) and missing_input.reason == "input file not found: in.mp4"
    missing_output_dir = classify_failure("ffmpeg", 1, ["/x/out.mp4: No such file or directory"], inputs=["in.mp4"])
    assert isinstance(missing_output_dir, TransientError)
    assert missing_output_dir.reason == "ffmpeg exited with status 1:\n/x/out.mp4: No such file or directory"


def test_killed_by_a_signal_is_transient() -> None:
    error = classify_failure("ffmpeg", -9, [])
    assert isinstance(error, TransientError) and error.reason == "ffmpeg was killed by SIGKILL (out of memory?)"


def test_unknown_failure_keeps_only_the_last_lines() -> None:
    lines = [f"line {n}" for n in range(100)]
    error = classify_failure("ffmpeg", 187, lines)
    assert isinstance(error, TransientError)
    assert error.reason.startswith("ffmpeg exited with status 187:\nline 85\n") and error.reason.endswith("line 99")


def test_failures_hidden_behind_exit_status_0() -> None:
    assert unreported_failure("ffmpeg", []) is None
    truncated = unreported_failure("ffmpeg", ["[mov @ 0x1] stream 0, offset 0x24850: partial file"])
    assert isinstance(truncated, PermanentError)
    assert truncated.reason == "input is truncated: [mov] stream 0, offset 0x24850: partial file"
    assert unreported_failure("ffmpeg", ["stream 0: partial file"], allow_truncated_input=True) is None
    full = unreported_failure("ffmpeg", ["Error writing trailer of /dev/full: No space left on device"])
    assert isinstance(full, TransientError) and full.reason.startswith("disk full")
    io_error = unreported_failure("ffmpeg", ["Error closing file out.ts: Input/output error"])
    assert isinstance(io_error, TransientError) and "could not finish writing" in io_error.reason


def test_helpers() -> None:
    assert clean_stderr_line("[h264 @ 0x559eec189440] Invalid NAL unit size  \n") == "[h264] Invalid NAL unit size"
    assert input_paths(["-ss", "1", "-i", "a.mp4", "-i", "b.wav", "out.mp4"]) == ["a.mp4", "b.wav"]
