"""VOD download: yt-dlp's own HLS downloader and aria2c side by side, parallel vs sequential
fragments on capped connections, and memory while downloading 2 GB.

    .venv/bin/python bench/download.py [--ratio-mb 120] [--cap-mbps 1] [--fragments 10] [--rounds 1]
                                       [--size-gb 2] [--quick]

Every download runs reelhouse's VOD download path (`archive.ytdlp.run_download`: core's yt-dlp
runner, real yt-dlp, real aria2c, real HTTP) against a loopback HLS origin started in its own
process (tests/fakes/hls_origin.py), so the origin's CPU and memory are not counted as ours.
1. Ratio: the origin caps every TCP connection at `--cap-mbps` (as a CDN edge caps a single
   stream) and serves a VOD of ~1.2 MB segments (a multiple of `--fragments` of them, so the
   last wave of parallel fragments is full) to each downloader with `--concurrent-fragments N`
   and with 1. Printed per downloader: wall time of the whole download (yt-dlp start-up,
   extraction and the remux included), the transfer alone as the origin saw it (first request to
   last byte), both speed-ups, how close the transfer came to every connection busy all the
   time, and the CPU time of all processes of the download. Target: >= 8x transfer at 10.
2. Memory: an uncapped origin serves a synthetic VOD of `--size-gb` (copies of one 2 s 720p fMP4
   segment with rewritten timestamps, so nothing of that size is ever encoded); the resident
   memory of this process plus yt-dlp's process tree (aria2c, ffprobe, ffmpeg) is sampled every
   50 ms. Target: < 150 MB at one instant.
The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reelhouse.archive.ytdlp import DownloadRequest, run_download  # noqa: E402
from reelhouse.core.media.ytdlp import Downloader, find_aria2c  # noqa: E402

MB = 1024 * 1024
RSS_TARGET = 150 * MB
SPEEDUP_TARGET = 8.0
DOWNLOADERS: tuple[Downloader, ...] = ("native", "aria2c")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Origin:
    def __init__(self, vods: dict[str, int], rate: float | None, segment_bitrate: str) -> None:
        args = [sys.executable, "-m", "tests.fakes.hls_origin", "--segment-bitrate", segment_bitrate]
        for vod_id, size in vods.items():
            args += ["--synthetic", f"{vod_id}:{size}"]
        if rate:
            args += ["--rate", str(rate)]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()  # "http://127.0.0.1:PORT segment_bytes=N"
        if not line:
            raise RuntimeError("the HLS origin did not start")
        self.base, self.segment = line[0], int(line[1].split("=")[1])

    def url(self, vod_id: str) -> str:
        return f"{self.base}/videos/{vod_id}/index.m3u8"

    def stats(self, vod_id: str) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.base}/stats/{vod_id}") as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class PeakRss:
    """Samples this process, yt-dlp (our direct child) and yt-dlp's own children (aria2c during
    the transfer, ffprobe/ffmpeg after it) while a download runs."""

    def __init__(self, exclude: int) -> None:
        self.me = psutil.Process()
        self.exclude = exclude  # the origin server: also our child, but not part of the download
        self.peak = {"self": 0, "yt-dlp": 0, "helpers": 0, "total": 0}
        self.by_helper: dict[str, int] = {}  # peak per helper program

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = {"self": self.me.memory_info().rss, "yt-dlp": 0, "helpers": 0}
            for child in self.me.children(recursive=False):
                if child.pid == self.exclude:
                    continue
                try:
                    now["yt-dlp"] += child.memory_info().rss
                    for helper in child.children(recursive=True):
                        rss = helper.memory_info().rss
                        now["helpers"] += rss
                        name = helper.name()
                        self.by_helper[name] = max(self.by_helper.get(name, 0), rss)
                except psutil.Error:
                    continue
            now["total"] = now["self"] + now["yt-dlp"] + now["helpers"]
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            await asyncio.sleep(0.05)


def cpu_seconds() -> float:
    """CPU of this process and of every finished child (yt-dlp counts its aria2c and ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def download(
    url: str, out_dir: Path, fragments: int, downloader: Downloader, rss: PeakRss | None = None
) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, bytes, downloader that ran)."""
    output = out_dir / f"twitch_bench_{downloader}_{fragments}_{time.monotonic_ns()}.mp4"
    stop = asyncio.Event()
    sampler = asyncio.create_task(rss.sample(stop)) if rss else None
    cpu, started = cpu_seconds(), time.perf_counter()
    try:
        result = await run_download(
            DownloadRequest(url=url, output=output, concurrent_fragments=fragments, downloader=downloader)
        )
    finally:
        stop.set()
        if sampler:
            await sampler
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    result.path.unlink()
    return elapsed, cpu, result.size, result.downloader


async def ratio_part(args: argparse.Namespace, work: Path) -> tuple[list[str], dict[str, float]]:
    segment_guess = 1_222_551  # one 2 s segment at --segment-bitrate 4M
    segments = max(args.fragments, round(args.ratio_mb * MB / segment_guess / args.fragments) * args.fragments)
    size = segments * segment_guess - segment_guess // 2  # the origin rounds up to whole segments
    runs = [(r, d, f) for r in range(args.rounds) for d in DOWNLOADERS for f in (1, args.fragments)]
    ids = {run: f"ratio-{run[0]}-{run[1]}-{run[2]}" for run in runs}
    origin = Origin(dict.fromkeys(ids.values(), size), args.cap_mbps * MB, "4M")
    wall: dict[tuple[str, int], list[float]] = {}
    transfer: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        for run in runs:
            round_no, downloader, fragments = run
            elapsed, used, _, ran = await download(origin.url(ids[run]), work, fragments, downloader)
            if ran != downloader:
                raise RuntimeError(f"asked for {downloader}, {ran} ran")
            seconds = origin.stats(ids[run])["seconds"]
            wall.setdefault((downloader, fragments), []).append(elapsed)
            transfer.setdefault((downloader, fragments), []).append(seconds)
            cpu.setdefault((downloader, fragments), []).append(used)
            log(f"round {round_no + 1}: {downloader:6s} x{fragments:<2d} {elapsed:6.2f}s (transfer {seconds:6.2f}s)")
    finally:
        origin.stop()
    vod_bytes = segments * origin.segment
    lines = [
        f"### Parallel vs sequential fragments ({vod_bytes / MB:.0f} MB VOD, {segments} segments of "
        f"{origin.segment / MB:.2f} MB, {args.cap_mbps} MB/s per connection, medians of {args.rounds} round(s))",
        "",
        "| downloader | fragments | whole download | transfer (at the origin) | of the connections' limit | CPU |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    speedups: dict[str, float] = {}
    summary = []
    for downloader in DOWNLOADERS:
        med = {f: statistics.median(wall[(downloader, f)]) for f in (1, args.fragments)}
        tmed = {f: statistics.median(transfer[(downloader, f)]) for f in (1, args.fragments)}
        for f in (1, args.fragments):
            limit = vod_bytes / (f * args.cap_mbps * MB)  # every connection busy all the time
            lines.append(
                f"| {downloader} | {f} | {med[f]:.2f} s ({vod_bytes / med[f] / MB:.1f} MB/s) | {tmed[f]:.2f} s | "
                f"{limit / tmed[f]:.0%} | {statistics.median(cpu[(downloader, f)]):.2f} s |"
            )
        speedups[f"{downloader} whole"] = med[1] / med[args.fragments]
        speedups[f"{downloader} transfer"] = tmed[1] / tmed[args.fragments]
        summary.append(
            f"- {downloader}: **{speedups[f'{downloader} whole']:.2f}x** whole download, "
            f"**{speedups[f'{downloader} transfer']:.2f}x** transfer ({args.fragments} fragments vs 1; "
            f"the limit is {args.fragments}x)"
        )
    return [*lines, "", *summary, ""], speedups


async def memory_part(args: argparse.Namespace, work: Path) -> tuple[list[str], dict[str, int]]:
    size = int(args.size_gb * 1024 * MB)
    origin = Origin(dict.fromkeys(DOWNLOADERS, size), None, "8M")
    peaks: dict[str, int] = {}
    lines = [
        f"### Memory while downloading a {size / 1024 / MB:.2f} GB VOD (`--concurrent-fragments {args.fragments}`, "
        f"uncapped loopback, {origin.segment / MB:.1f} MB segments)",
        "",
        "| downloader | reelhouse side | yt-dlp | its helpers (peak of each) | all at one instant | time |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    try:
        for downloader in DOWNLOADERS:
            rss = PeakRss(exclude=origin.proc.pid)
            log(f"{downloader}: downloading {size / MB:.0f} MB ...")
            elapsed, _, written, _ = await download(origin.url(downloader), work, args.fragments, downloader, rss)
            peak = rss.peak
            peaks[downloader] = peak["total"]
            each = ", ".join(f"{name} {rss / MB:.0f}" for name, rss in sorted(rss.by_helper.items()))
            lines.append(
                f"| {downloader} | {peak['self'] / MB:.0f} MB | {peak['yt-dlp'] / MB:.0f} MB | "
                f"{peak['helpers'] / MB:.0f} MB ({each}) | **{peak['total'] / MB:.0f} MB** | "
                f"{elapsed:.1f} s ({written / elapsed / MB:.0f} MB/s) |"
            )
    finally:
        origin.stop()
    return [*lines, ""], peaks


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ratio-mb", type=int, default=120)
    parser.add_argument("--cap-mbps", type=float, default=1.0)
    parser.add_argument("--fragments", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--parts", default="ratio,memory", help="comma list: ratio, memory")
    args = parser.parse_args()
    if args.quick:
        args.size_gb, args.ratio_mb = 0.1, 24
    if find_aria2c() is None:
        raise SystemExit("aria2c is not installed (make system-deps installs Debian's aria2)")
    with tempfile.TemporaryDirectory(prefix="bench-download-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        versions = {
            "yt-dlp": subprocess.run(
                [sys.executable, "-m", "yt_dlp", "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "aria2c": subprocess.run(["aria2c", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
        }
        lines = [
            "## VOD download (bench/download.py)",
            "",
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, yt-dlp {versions['yt-dlp']}, "
            f"{versions['aria2c']}",
            "",
        ]
        parts = args.parts.split(",")
        if "ratio" in parts:
            ratio_lines, speedups = await ratio_part(args, work)
            # The target is on the transfer: start-up, extraction and the remux take the same
            # seconds however many fragments run, and on a loaded machine they are noise.
            fast = speedups["aria2c transfer"]
            lines += [
                *ratio_lines,
                f"**aria2c at {args.fragments} fragments: {fast:.2f}x transfer "
                f"({speedups['aria2c whole']:.2f}x whole download): {'meets' if fast >= SPEEDUP_TARGET else 'MISSES'} "
                f"the >= {SPEEDUP_TARGET:.0f}x target**",
                "",
            ]
        if "memory" in parts:
            memory_lines, peaks = await memory_part(args, work)
            worst = max(peaks.values())
            lines += [
                *memory_lines,
                f"**peak {worst / MB:.0f} MB for all processes of a download at one instant: "
                f"{'meets' if worst < RSS_TARGET else 'MISSES'} the < {RSS_TARGET // MB} MB target**",
                "",
            ]
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
