"""VOD download: parallel vs sequential HLS fragments, and memory while downloading 2 GB.

    .venv/bin/python bench/download.py [--size-gb 2] [--cap-mbps 1] [--fragments 10] [--rounds 2] [--quick]

Both parts run reelhouse's download path (`archive.ytdlp.run_download`: real yt-dlp, real HTTP)
against a loopback HLS origin started in its own process (tests/fakes/hls_origin.py), so the
origin's CPU and memory are not counted as ours.
1. Ratio: an origin that caps every TCP connection at `--cap-mbps` (as a CDN edge caps a single
   stream) serves the same VOD to a download with `--concurrent-fragments N` and to one with 1;
   rounds alternate, so machine noise hits both; the median times and their ratio are printed.
2. Memory: an uncapped origin serves a synthetic VOD of `--size-gb` (copies of one 2 s 720p fMP4
   segment with rewritten timestamps, so nothing of that size is ever encoded); the resident
   memory of this process plus yt-dlp's process tree is sampled every 50 ms. Target: < 150 MB.
The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reelhouse.archive.ytdlp import DownloadRequest, run_download  # noqa: E402

MB = 1024 * 1024
RSS_TARGET = 150 * MB


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_origin(vods: dict[str, int], rate: float | None) -> tuple[subprocess.Popen, str, int]:
    args = [sys.executable, "-m", "tests.fakes.hls_origin"]
    for vod_id, size in vods.items():
        args += ["--synthetic", f"{vod_id}:{size}"]
    if rate:
        args += ["--rate", str(rate)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()  # "http://127.0.0.1:PORT segment_bytes=N"
    if not line:
        raise RuntimeError("the HLS origin did not start")
    return proc, line[0], int(line[1].split("=")[1])


class PeakRss:
    """Samples this process, yt-dlp (our direct child) and yt-dlp's own children (the ffprobe /
    ffmpeg it runs after the transfer) while a download runs; peaks kept per part."""

    def __init__(self, exclude: int) -> None:
        self.me = psutil.Process()
        self.exclude = exclude  # the origin server: also our child, but not part of the download
        self.peak = {"self": 0, "yt-dlp": 0, "helpers": 0, "total": 0}

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = {"self": self.me.memory_info().rss, "yt-dlp": 0, "helpers": 0}
            for child in self.me.children(recursive=False):
                if child.pid == self.exclude:
                    continue
                try:
                    now["yt-dlp"] += child.memory_info().rss
                    now["helpers"] += sum(c.memory_info().rss for c in child.children(recursive=True))
                except psutil.Error:
                    continue
            now["total"] = now["self"] + now["yt-dlp"] + now["helpers"]
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            await asyncio.sleep(0.05)


async def download(url: str, out_dir: Path, fragments: int, rss: PeakRss | None = None) -> tuple[float, int]:
    output = out_dir / f"twitch_bench_{fragments}_{time.monotonic_ns()}.mp4"
    stop = asyncio.Event()
    sampler = asyncio.create_task(rss.sample(stop)) if rss else None
    started = time.perf_counter()
    try:
        result = await run_download(DownloadRequest(url=url, output=output, concurrent_fragments=fragments))
    finally:
        stop.set()
        if sampler:
            await sampler
    elapsed = time.perf_counter() - started
    size = result.size
    result.path.unlink()
    return elapsed, size


async def ratio_part(args: argparse.Namespace, work: Path) -> list[str]:
    size = args.ratio_mb * MB
    proc, base, segment = start_origin({"ratio": size}, args.cap_mbps * MB)
    url = f"{base}/videos/ratio/index.m3u8"
    try:
        sequential, parallel = [], []
        for round_no in range(args.rounds):
            for label, fragments, times in (("sequential", 1, sequential), ("parallel", args.fragments, parallel)):
                elapsed, _ = await download(url, work, fragments)
                times.append(elapsed)
                log(f"round {round_no + 1}: {label:10s} {elapsed:6.2f}s")
    finally:
        proc.terminate()
        proc.wait()
    seq, par = statistics.median(sequential), statistics.median(parallel)
    ideal = size / (args.cap_mbps * MB)
    return [
        f"### Parallel vs sequential fragments ({args.ratio_mb} MB VOD, {segment / MB:.1f} MB segments, "
        f"{args.cap_mbps} MB/s per connection)",
        "",
        "| download | median time | throughput |",
        "|---|---|---|",
        f"| sequential (`--concurrent-fragments 1`) | {seq:.2f} s | {size / seq / MB:.1f} MB/s |",
        f"| parallel (`--concurrent-fragments {args.fragments}`) | {par:.2f} s | {size / par / MB:.1f} MB/s |",
        "",
        f"**parallel / sequential speed-up: {seq / par:.2f}x** (one capped connection alone needs "
        f"{ideal:.1f} s; medians of {args.rounds} alternating rounds)",
        "",
    ]


async def memory_part(args: argparse.Namespace, work: Path) -> list[str]:
    size = int(args.size_gb * 1024 * MB)
    proc, base, segment = start_origin({"big": size}, None)
    rss = PeakRss(exclude=proc.pid)
    try:
        log(f"downloading {size / MB:.0f} MB ...")
        elapsed, written = await download(f"{base}/videos/big/index.m3u8", work, args.fragments, rss)
    finally:
        proc.terminate()
        proc.wait()
    verdict = "meets" if rss.peak["total"] < RSS_TARGET else "MISSES"
    return [
        f"### Memory while downloading a {written / 1024 / MB:.2f} GB VOD "
        f"({written // segment} segments, `--concurrent-fragments {args.fragments}`, uncapped loopback)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| peak RSS, reelhouse side (this process: runner, progress parsing) | {rss.peak['self'] / MB:.0f} MB |",
        f"| peak RSS, yt-dlp (fetching, {args.fragments} fragment threads) | {rss.peak['yt-dlp'] / MB:.0f} MB |",
        f"| peak RSS, yt-dlp's ffprobe/ffmpeg after the transfer | {rss.peak['helpers'] / MB:.0f} MB |",
        f"| peak RSS, everything at one instant | {rss.peak['total'] / MB:.0f} MB |",
        f"| time | {elapsed:.1f} s ({written / elapsed / MB:.0f} MB/s) |",
        "",
        f"**peak {rss.peak['total'] / MB:.0f} MB for all processes of the download at one instant: {verdict} "
        f"the < {RSS_TARGET // MB} MB target**",
        "",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--ratio-mb", type=int, default=24)
    parser.add_argument("--cap-mbps", type=float, default=1.0)
    parser.add_argument("--fragments", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.size_gb, args.ratio_mb, args.rounds = 0.1, 12, 1
    with tempfile.TemporaryDirectory(prefix="bench-download-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        lines = ["## VOD download (bench/download.py)", "",
                 f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, "
                 f"yt-dlp {subprocess.run([sys.executable, '-m', 'yt_dlp', '--version'], capture_output=True, text=True).stdout.strip()}",
                 ""]
        lines += await ratio_part(args, work)
        lines += await memory_part(args, work)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
