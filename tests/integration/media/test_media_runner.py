"""run_ffmpeg with a real ffmpeg: progress reports, failure classes, and cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from itertools import pairwise
from pathlib import Path

import psutil
import pytest

from media_fixtures import ffmpeg_children
from reelhouse.config import MediaSettings
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.media.ffmpeg import Progress, run_ffmpeg


def endless_encode(out: Path) -> list[str]:
    # Read in real time (-re), so this runs for a minute unless stopped.
    return [
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-t",
        "60",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-f",
        "mpegts",
        str(out),
    ]


async def test_progress_reports_reach_100_percent(av_clip: Path, tmp_path: Path, media_settings: MediaSettings) -> None:
    reports: list[Progress] = []

    async def record(progress: Progress) -> None:
        reports.append(progress)

    # -re paces the 2 s clip in real time, so ffmpeg reports several times before it ends.
    result = await run_ffmpeg(
        [
            "-re",
            "-i",
            str(av_clip),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            str(tmp_path / "out.mp4"),
        ],
        duration=2.0,
        on_progress=record,
        settings=media_settings,
    )

    assert len(reports) >= 3
    running, final = reports[:-1], reports[-1]
    assert all(not report.finished for report in running)
    assert final.finished and final.percent == 100.0 and final.eta_seconds == 0.0
    percents = [report.percent for report in reports]
    assert all(p is not None for p in percents)
    assert percents == sorted(percents)  # type: ignore[type-var]
    assert 0 < running[-1].out_time <= 2.1
    assert any(report.speed and report.speed > 0 for report in running)
    assert any(report.eta_seconds is not None and report.eta_seconds > 0 for report in running)
    assert final.frame == 60
    assert result.last_progress == final
    assert (tmp_path / "out.mp4").stat().st_size > 0


async def test_progress_reports_are_throttled_to_the_save_interval(av_clip: Path, tmp_path: Path) -> None:
    settings = MediaSettings(hw_accel="none", progress_save_interval=0.8)
    stamps: list[tuple[float, Progress]] = []

    async def record(progress: Progress) -> None:
        stamps.append((time.monotonic(), progress))

    # ffmpeg reports every 0.1 s here; we must pass on at most one report per 0.8 s.
    started = time.monotonic()
    await run_ffmpeg(
        [
            "-stats_period",
            "0.1",
            "-re",
            "-i",
            str(av_clip),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-an",
            str(tmp_path / "out.mp4"),
        ],
        duration=2.0,
        on_progress=record,
        settings=settings,
    )

    elapsed = time.monotonic() - started
    running = [when for when, progress in stamps if not progress.finished]
    assert 2 <= len(running) <= elapsed / 0.8 + 1
    gaps = [later - earlier for earlier, later in pairwise(running)]
    assert all(gap >= 0.8 for gap in gaps), gaps
    assert stamps[-1][1].finished


async def test_cancelling_stops_ffmpeg_and_leaves_no_process(tmp_path: Path, media_settings: MediaSettings) -> None:
    started = asyncio.Event()

    async def on_progress(progress: Progress) -> None:
        started.set()

    task = asyncio.create_task(
        run_ffmpeg(endless_encode(tmp_path / "out.ts"), duration=60.0, on_progress=on_progress, settings=media_settings)
    )
    await asyncio.wait_for(started.wait(), timeout=20)
    running = ffmpeg_children()
    assert len(running) == 1, "the encode should be running before we cancel it"
    # Its own process group, so a signal to the group cannot hit the test runner.
    assert os.getpgid(running[0].pid) == running[0].pid != os.getpgid(0)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert ffmpeg_children() == []
    assert not psutil.pid_exists(running[0].pid) or running[0].status() == psutil.STATUS_ZOMBIE


async def test_cancel_escalates_to_sigkill_when_ffmpeg_ignores_sigterm(
    tmp_path: Path, media_settings: MediaSettings
) -> None:
    started = asyncio.Event()

    async def on_progress(progress: Progress) -> None:
        started.set()

    task = asyncio.create_task(
        run_ffmpeg(
            endless_encode(tmp_path / "out.ts"),
            duration=60.0,
            on_progress=on_progress,
            settings=media_settings,
            cancel_grace=1.0,
        )
    )
    await asyncio.wait_for(started.wait(), timeout=20)
    (encoder,) = ffmpeg_children()
    # A stopped process cannot act on SIGTERM (it stays pending); only SIGKILL ends it.
    os.kill(encoder.pid, signal.SIGSTOP)

    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - cancelled_at >= 1.0
    assert ffmpeg_children() == []


async def test_corrupt_input_is_permanent(truncated_mp4: Path, tmp_path: Path, media_settings: MediaSettings) -> None:
    with pytest.raises(PermanentError) as caught:
        await run_ffmpeg(["-i", str(truncated_mp4), "-f", "null", "-"], settings=media_settings)
    assert "moov atom not found" in caught.value.reason
    assert str(truncated_mp4) in caught.value.reason


async def test_input_truncated_mid_stream_is_permanent_although_ffmpeg_exits_0(
    partial_mp4: Path, media_settings: MediaSettings
) -> None:
    args = ["-i", str(partial_mp4), "-f", "null", "-"]
    with pytest.raises(PermanentError) as caught:
        await run_ffmpeg(args, settings=media_settings)
    assert caught.value.reason.startswith("input is truncated:")
    assert "partial file" in caught.value.reason

    # A caller salvaging what is there (e.g. a thumbnail of a damaged upload) can opt out.
    result = await run_ffmpeg(args, settings=media_settings, allow_truncated_input=True)
    assert any("partial file" in line for line in result.stderr_tail)


async def test_unknown_encoder_is_permanent(av_clip: Path, media_settings: MediaSettings) -> None:
    with pytest.raises(PermanentError) as caught:
        await run_ffmpeg(["-i", str(av_clip), "-c:v", "h264_imaginary", "-f", "null", "-"], settings=media_settings)
    assert "Unknown encoder 'h264_imaginary'" in caught.value.reason


async def test_full_disk_is_transient(av_clip: Path, media_settings: MediaSettings) -> None:
    # /dev/full fails every write with ENOSPC, exactly as a full filesystem does.
    with pytest.raises(TransientError) as caught:
        await run_ffmpeg(["-i", str(av_clip), "-c", "copy", "-f", "mpegts", "/dev/full"], settings=media_settings)
    assert caught.value.reason.startswith("disk full while running ffmpeg:")
    assert "No space left on device" in caught.value.reason


async def test_other_failures_are_transient_and_carry_the_stderr_tail(
    av_clip: Path, tmp_path: Path, media_settings: MediaSettings
) -> None:
    target = tmp_path / "missing-dir" / "out.mp4"
    with pytest.raises(TransientError) as caught:
        await run_ffmpeg(["-i", str(av_clip), "-c", "copy", str(target)], settings=media_settings)
    assert caught.value.reason.startswith("ffmpeg exited with status 1:")
    assert f"{target}: No such file or directory" in caught.value.reason


async def test_stderr_tail_is_bounded(av_clip: Path, media_settings: MediaSettings) -> None:
    # A -loglevel after our own flags wins; debug output runs to hundreds of lines.
    result = await run_ffmpeg(["-loglevel", "debug", "-i", str(av_clip), "-f", "null", "-"], settings=media_settings)
    assert len(result.stderr_tail) == 50
