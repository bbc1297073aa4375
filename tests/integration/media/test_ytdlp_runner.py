"""core.media.ytdlp with real yt-dlp, real aria2c and a real HLS origin (ffmpeg + HTTP):
both downloaders, resume across them, cancellation, a killed worker, the size bound, errors.
The archive and encode tests cover the same runner through their tasks."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from reelhouse.core.media.ytdlp import (
    Cause,
    YtdlpProgress,
    YtdlpRequest,
    YtdlpTooLarge,
    YtdlpUnavailable,
    partial_files,
    run_ytdlp,
)
from tests.fakes.hls_origin import HlsOrigin, generate_hls
from tests.fakes.server import ServedApp, serve

DOWNLOADER = Path(__file__).with_name("ytdlp_download.py")


@pytest.fixture(scope="session", autouse=True)
def _require_aria2c() -> None:
    if shutil.which("aria2c") is None:
        pytest.fail("aria2c is required for the yt-dlp runner tests (make system-deps: Debian package aria2)")


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """~3 MB in 12 segments of 1 s (CBR): long enough to interrupt when the origin is capped."""
    return generate_hls(
        tmp_path_factory.mktemp("clip"), duration=12, segment_seconds=1, size="320x180", video_bitrate="2M"
    )


@pytest.fixture
def origin(clip) -> HlsOrigin:
    origin = HlsOrigin()
    origin.add_vod("v1", clip)
    return origin


@pytest.fixture
def served(origin) -> Iterator[ServedApp]:
    with serve(origin) as app:
        yield app


def url(served: ServedApp, vod: str = "v1") -> str:
    return f"{served.base_url}/videos/{vod}/index.m3u8"


def duration(path: Path) -> float:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(probe.stdout)["format"]["duration"])


def decode_errors(path: Path) -> str:
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
    ).stderr


def live_descendants(
    root: psutil.Process | None = None, *, besides: frozenset[int] = frozenset()
) -> list[psutil.Process]:
    found = []
    for proc in (root or psutil.Process()).children(recursive=True):
        try:
            if proc.pid not in besides and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def earlier_children() -> frozenset[int]:
    """Processes this test process already had (a session's server, say): not the download's."""
    return frozenset(p.pid for p in live_descendants())


def is_aria2c(proc: psutil.Process) -> bool:
    try:
        return Path(proc.cmdline()[0]).name == "aria2c"
    except (psutil.Error, IndexError):
        return False


async def until(predicate, what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


@pytest.mark.parametrize("downloader", ["aria2c", "native"])
async def test_an_hls_vod_downloads_once_per_segment_with_either_downloader(downloader, origin, served, tmp_path):
    reports: list[YtdlpProgress] = []
    result = await run_ytdlp(
        YtdlpRequest(url(served), tmp_path / "v1.mp4", merge_output_format="mp4", downloader=downloader),
        reports.append,
    )
    assert result.downloader == downloader and result.path == tmp_path / "v1.mp4"
    assert result.size == result.path.stat().st_size > 1_000_000
    assert duration(result.path) == pytest.approx(12, abs=0.2) and decode_errors(result.path) == ""
    segments = Counter(name for _vod, name, status in origin.requests if name.startswith("seg_") and status == 200)
    assert len(segments) == 12 and set(segments.values()) == {1}, segments
    assert reports, "progress was reported"
    assert [r.downloaded_bytes for r in reports] == sorted(r.downloaded_bytes for r in reports)
    assert partial_files(result.path) == [], "no fragment, control or lock file is left"


@pytest.mark.parametrize(
    ("first", "second"), [("aria2c", "aria2c"), ("native", "aria2c"), ("aria2c", "native"), ("native", "native")]
)
async def test_a_cancelled_download_resumes_with_either_downloader(
    first, second, origin, served, tmp_path, earlier_children
):
    origin.rate_per_connection = 200_000  # ~8 s for the clip with 2 fragments in flight
    total = origin.vod_size("v1")
    request = YtdlpRequest(
        url(served), tmp_path / "v1.mp4", merge_output_format="mp4", concurrent_fragments=2, downloader=first
    )
    task = asyncio.create_task(run_ytdlp(request))
    await until(lambda: origin.bytes_sent("v1") > total * 0.4, "a good part of the VOD to be fetched")
    assert first != "aria2c" or any(is_aria2c(p) for p in live_descendants(besides=earlier_children)), (
        "aria2c fetches the fragments"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_descendants(besides=earlier_children) == [], (
        "the cancel returns only once yt-dlp and its helpers are gone"
    )
    fetched = origin.bytes_sent("v1")
    assert fetched < total * 0.9, "the cancel lands mid-download"
    assert partial_files(request.output), "the cancelled download leaves its partial files"

    origin.rate_per_connection = None
    result = await run_ytdlp(YtdlpRequest(url(served), request.output, merge_output_format="mp4", downloader=second))
    assert duration(result.path) == pytest.approx(12, abs=0.2) and decode_errors(result.path) == ""
    refetched = origin.bytes_sent("v1") - total
    if first == second:
        assert refetched < total * 0.3, f"{refetched} of {total} bytes fetched twice"
    assert partial_files(result.path) == []


async def test_a_killed_worker_takes_ytdlp_and_aria2c_with_it(origin, served, tmp_path):
    origin.rate_per_connection = 100_000
    worker = subprocess.Popen(
        [sys.executable, str(DOWNLOADER), url(served), str(tmp_path / "v1.mp4"), "aria2c"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert await asyncio.to_thread(worker.stdout.readline) == "started\n"
        helpers = live_descendants(psutil.Process(worker.pid))
        assert any(is_aria2c(p) for p in helpers), [p.cmdline()[:2] for p in helpers]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        await until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in helpers), "")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


async def test_the_size_bound_stops_an_hls_download(origin, served, tmp_path, earlier_children):
    origin.rate_per_connection = 200_000  # progress comes every half second: overshoot ~200 KB
    with pytest.raises(YtdlpTooLarge) as raised:
        await run_ytdlp(YtdlpRequest(url(served), tmp_path / "v1.mp4", max_bytes=500_000, concurrent_fragments=2))
    assert raised.value.cause is Cause.TOO_LARGE and "500000" in raised.value.reason
    assert live_descendants(besides=earlier_children) == []
    assert origin.bytes_sent("v1") < origin.vod_size("v1") / 2, "stopped soon after the bound"


@pytest.mark.parametrize("downloader", ["aria2c", "native"])
async def test_a_deleted_vod_is_unavailable(downloader, origin, served, tmp_path):
    origin.delete_vod("v1")
    with pytest.raises(YtdlpUnavailable) as raised:
        await run_ytdlp(YtdlpRequest(url(served), tmp_path / "v1.mp4", downloader=downloader))
    assert raised.value.cause is Cause.NOT_FOUND and raised.value.http_status == 404
    assert "404" in raised.value.headline


async def test_a_direct_file_is_fetched_whole_or_refused_when_over_the_size_bound(origin, served, clip, tmp_path):
    segment = f"{served.base_url}/videos/v1/seg_0000.ts"
    size = (clip / "seg_0000.ts").stat().st_size
    with pytest.raises(YtdlpTooLarge) as raised:
        await run_ytdlp(YtdlpRequest(segment, tmp_path / "refused" / "source.%(ext)s", max_bytes=size // 2))
    assert raised.value.cause is Cause.TOO_LARGE
    result = await run_ytdlp(
        YtdlpRequest(segment, tmp_path / "source.%(ext)s", max_bytes=size, restrict_filenames=True)
    )
    assert result.path == tmp_path / "source.ts" and result.size == size and result.downloader == "native"
