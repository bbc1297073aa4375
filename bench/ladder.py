"""Benchmark: HLS ladder encode, reelhouse vs the same work done by hand with ffmpeg.

Runs in one session, interleaved, so the noise of a shared machine hits every strategy alike:
  (a) reelhouse    `encode_hls_ladder` (probe, one ffmpeg process, progress parsing, playlist check)
  (b) bare ffmpeg  the same single-process ladder command, typed out below, no wrapper
  (c) per rung     one ffmpeg process per rendition, run one after another: each decodes the
                   source again (what a per-rendition task design costs on one machine)
Prints each strategy's median wall time and CPU time (user + system, ffmpeg children included)
over --repeats, and the ratios a/b (wrapper overhead; target <= 1.05) and a/c (what decoding
once saves). On a busy machine wall time follows the scheduler; CPU time is the steadier figure.

    .venv/bin/python bench/ladder.py [--duration 20] [--preset veryfast] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reelhouse.config import MediaSettings
from reelhouse.core.media.ladder import encode_hls_ladder
from reelhouse.core.media.profiles import builtin_profile

FFMPEG = "ffmpeg"
# The hls-default ladder for a 1920x1080 30 fps source with 6 s segments: (name, w, h, video, maxrate, bufsize, audio)
RUNGS = [
    ("1080p", 1920, 1080, "5000000", "5350000", "7500000", "128000"),
    ("720p", 1280, 720, "2800000", "2996000", "4200000", "128000"),
    ("480p", 854, 480, "1400000", "1498000", "2100000", "96000"),
    ("360p", 640, 360, "800000", "856000", "1200000", "96000"),
]
GOP = "180"
# Both hand-written ladders: a keyframe every 6 s (closed GOPs, no scene cuts), VOD HLS.
KEYFRAMES_AND_HLS = [
    "-g",
    GOP,
    "-keyint_min",
    GOP,
    "-sc_threshold",
    "0",
    "-force_key_frames",
    "expr:gte(t,n_forced*6)",
    "-f",
    "hls",
    "-hls_time",
    "6",
    "-hls_playlist_type",
    "vod",
    "-hls_list_size",
    "0",
]


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def make_source(path: Path, duration: int) -> None:
    run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1920x1080:rate=30:duration={duration}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=48000:duration={duration}",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "8M",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-movflags",
            "+faststart",
            str(path),
        ]
    )


def reelhouse_ladder(source: Path, out: Path, preset: str) -> None:
    profile = builtin_profile("hls-default").with_preset(preset)  # type: ignore[arg-type]
    asyncio.run(encode_hls_ladder(source, out, profile, settings=MediaSettings(hw_accel="none")))


def bare_ffmpeg_ladder(source: Path, out: Path, preset: str) -> None:
    out.mkdir(parents=True)
    run(
        [
            FFMPEG,
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "warning",
            "-y",
            "-i",
            str(source),
            "-filter_complex",
            "[0:v]split=4[s0][s1][s2][s3];"
            "[s0]scale=1920:1080:flags=bicubic,setsar=1,format=yuv420p[v0];"
            "[s1]scale=1280:720:flags=bicubic,setsar=1,format=yuv420p[v1];"
            "[s2]scale=854:480:flags=bicubic,setsar=1,format=yuv420p[v2];"
            "[s3]scale=640:360:flags=bicubic,setsar=1,format=yuv420p[v3]",
            "-map",
            "[v0]",
            "-map",
            "0:a:0",
            "-map",
            "[v1]",
            "-map",
            "0:a:0",
            "-map",
            "[v2]",
            "-map",
            "0:a:0",
            "-map",
            "[v3]",
            "-map",
            "0:a:0",
            "-c:v",
            "libx264",
            "-preset",
            preset,
            "-b:v:0",
            "5000000",
            "-maxrate:v:0",
            "5350000",
            "-bufsize:v:0",
            "7500000",
            "-b:v:1",
            "2800000",
            "-maxrate:v:1",
            "2996000",
            "-bufsize:v:1",
            "4200000",
            "-b:v:2",
            "1400000",
            "-maxrate:v:2",
            "1498000",
            "-bufsize:v:2",
            "2100000",
            "-b:v:3",
            "800000",
            "-maxrate:v:3",
            "856000",
            "-bufsize:v:3",
            "1200000",
            "-c:a",
            "aac",
            "-b:a:0",
            "128000",
            "-b:a:1",
            "128000",
            "-b:a:2",
            "96000",
            "-b:a:3",
            "96000",
            *KEYFRAMES_AND_HLS,
            "-hls_flags",
            "independent_segments",
            "-hls_segment_type",
            "mpegts",
            "-hls_segment_filename",
            f"{out}/%v/seg_%05d.ts",
            "-master_pl_name",
            "master.m3u8",
            "-var_stream_map",
            "v:0,a:0,name:1080p v:1,a:1,name:720p v:2,a:2,name:480p v:3,a:3,name:360p",
            f"{out}/%v/index.m3u8",
        ]
    )


def per_rung_ladder(source: Path, out: Path, preset: str) -> None:
    for name, width, height, video, maxrate, bufsize, audio in RUNGS:
        (out / name).mkdir(parents=True)
        run(
            [
                FFMPEG,
                "-hide_banner",
                "-nostdin",
                "-nostats",
                "-loglevel",
                "warning",
                "-y",
                "-i",
                str(source),
                "-vf",
                f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p",
                "-map",
                "0:v:0",
                "-map",
                "0:a:0",
                "-c:v",
                "libx264",
                "-preset",
                preset,
                "-b:v",
                video,
                "-maxrate",
                maxrate,
                "-bufsize",
                bufsize,
                "-c:a",
                "aac",
                "-b:a",
                audio,
                *KEYFRAMES_AND_HLS,
                "-hls_segment_filename",
                f"{out}/{name}/seg_%05d.ts",
                f"{out}/{name}/index.m3u8",
            ]
        )


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    """User + system CPU seconds of this process and every child it waited for."""


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action: Callable[[Path, Path, str], None], source: Path, out: Path, preset: str) -> Sample:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), cpu_seconds()
    action(source, out, preset)
    sample = Sample(time.perf_counter() - wall, cpu_seconds() - cpu)
    if not any(out.rglob("*.ts")):
        raise SystemExit(f"{action.__name__} wrote no segments")
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="source length in seconds (1080p30)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset for every rung")
    parser.add_argument("--repeats", type=int, default=3, help="runs per strategy; the median is reported")
    options = parser.parse_args()

    strategies = {
        "a reelhouse encode_hls_ladder": reelhouse_ladder,
        "b bare ffmpeg, one process": bare_ffmpeg_ladder,
        "c ffmpeg per rung, sequential": per_rung_ladder,
    }
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as scratch:
        work = Path(scratch)
        source = work / "source.mp4"
        make_source(source, options.duration)
        samples: dict[str, list[Sample]] = {name: [] for name in strategies}
        for _ in range(options.repeats):
            for name, action in strategies.items():
                samples[name].append(timed(action, source, work / "out", options.preset))

    wall = {name: statistics.median(s.wall for s in runs) for name, runs in samples.items()}
    cpu = {name: statistics.median(s.cpu for s in runs) for name, runs in samples.items()}
    print(
        f"HLS ladder, 4 rungs (1080p/720p/480p/360p), {options.duration} s 1080p30 source, "
        f"x264 preset {options.preset}, median of {options.repeats}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"  {'strategy':<32} {'wall s':>8} {'CPU s':>8}   runs (wall/CPU)")
    for name, runs in samples.items():
        detail = ", ".join(f"{s.wall:.1f}/{s.cpu:.1f}" for s in runs)
        print(f"  {name:<32} {wall[name]:8.2f} {cpu[name]:8.2f}   {detail}")
    (wa, wb, wc), (ca, cb, cc) = wall.values(), cpu.values()
    verdict = "within target" if wa / wb <= 1.05 else "ABOVE TARGET"
    print(f"  a/b wall {wa / wb:.3f} ({verdict}: <= 1.05)   a/b CPU {ca / cb:.3f}")
    print(f"  a/c wall {wa / wc:.3f}   a/c CPU {ca / cc:.3f}")


if __name__ == "__main__":
    main()
