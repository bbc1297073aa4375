"""Benchmark: live latency and restream cost, reelhouse vs bare ffmpeg commands, in one run.

The publisher burns its stream time into the picture as 16 black/white bars (centiseconds,
binary); with `-re` a frame stamped T leaves the publisher at start + T, so reading a stamp back
from the HLS output gives glass-to-glass latency without OCR:

  latency = (when the segment is first listed in the playlist) - (start + stamp of its first frame)

i.e. what a player at the live edge sees at best (a player adds its own buffer on top).
  (a) reelhouse   publish -> nginx-rtmp ingest -> live.transcode task -> storage -> playlist via the API
  (b) bare ffmpeg the same nginx and the same ladder ffmpeg arguments writing HLS to a folder
for 1 s and 2 s segments, then LL-HLS (LIVE_LL_HLS, 0.5 s parts of 1 s segments): latency =
when a part is first listed - capture of its first frame, the playlist read the way an LL-HLS
player reads it (blocking reloads of the next part); its bare-ffmpeg row is the same ffmpeg
arguments (0.5 s HLS segments = the parts) polled in the folder. Then reelhouse's regular 1 s
and LL-HLS streams at the same time ("at once": the same machine load). Then CPU of a codec-copy
restream: (a) reelhouse's `live.restream` ffmpeg, (b) a bare `ffmpeg -i rtmp://... -c copy -f
flv rtmp://listener`, each over --cpu-seconds.

    .venv/bin/python bench/live.py [--seconds 40] [--cpu-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
BITS = 16
W, H, FPS = 320, 240, 25


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stamp_filter() -> str:
    bar = W // BITS
    bit = f"mod(floor(floor(T*100)/pow(2,floor(X/{bar}))),2)"
    return f"geq=lum='{bit}*235+16':cb=128:cr=128"


async def publish(url: str, seconds: float) -> tuple[asyncio.subprocess.Process, float]:
    argv = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"color=black:size={W}x{H}:rate={FPS},{stamp_filter()},format=yuv420p",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(FPS),
            "-b:v", "800k", "-f", "flv", url]  # fmt: skip
    process = await asyncio.create_subprocess_exec(*argv)
    return process, time.time()


async def first_stamp(segment: bytes) -> float | None:
    """The stream time stamped into the first frame of a TS segment."""
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-v", "error", "-i", "pipe:0", "-frames:v", "1", "-vf", f"scale={W}:{H}", "-pix_fmt", "gray",
        "-f", "rawvideo", "pipe:1", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    raw, _ = await process.communicate(segment)
    if len(raw) < W * H:
        return None
    row = H // 2
    value = 0
    for bit in range(BITS):
        x = bit * (W // BITS) + (W // BITS) // 2
        if raw[row * W + x] > 128:
            value |= 1 << bit
    return value / 100


async def watch(fetch_playlist, fetch_segment, start: float, seconds: float) -> list[float]:
    """Poll a media playlist; for each new segment: visible time - (start + its first stamp)."""
    seen: set[str] = set()
    latencies: list[float] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = await fetch_playlist()
        now = time.time()
        for line in (text or "").splitlines():
            if line and not line.startswith("#") and line not in seen:
                seen.add(line)
                if len(seen) <= 2:
                    continue  # the first segments predate the watch
                data = await fetch_segment(line)
                stamp = await first_stamp(data) if data else None
                if stamp is not None:
                    latencies.append(now - (start + stamp))
        await asyncio.sleep(0.1)
    return latencies


PART_URI = re.compile(r'^#EXT-X-PART:.*URI="([^"]+)"')


async def watch_parts(fetch_playlist, fetch_part, start: float, seconds: float) -> list[float]:
    """Follow an LL-HLS playlist with blocking reloads of the next part (as hls.js in
    lowLatencyMode does); for each new part: when it was listed - (start + its first stamp)."""
    seen: set[str] = set()
    latencies: list[float] = []
    directive: dict[str, int] | None = None
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = await fetch_playlist(directive)
        now = time.time()
        if not text:
            directive = None
            await asyncio.sleep(0.1)
            continue
        lines = text.splitlines()
        fresh = [m.group(1) for line in lines if (m := PART_URI.match(line)) and m.group(1) not in seen]
        for uri in fresh:
            seen.add(uri)
            if directive is None:
                continue  # the parts of the first answer predate the watch
            data = await fetch_part(uri)
            stamp = await first_stamp(data) if data else None
            if stamp is not None:
                latencies.append(now - (start + stamp))
        sequence = int(next(x for x in lines if x.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
        segments = [x for x in lines if x and not x.startswith("#")]
        pending = 0
        for line in reversed(lines):
            if line.startswith("#EXT-X-PART:"):
                pending += 1
            elif line and not line.startswith("#"):
                break
        directive = {"_HLS_msn": sequence + len(segments), "_HLS_part": pending}
    return latencies


PLAYER_JS = """async ([url, lowLatency, seconds, start, bits, width, height]) => {
  const video = document.createElement("video");
  video.muted = true;
  document.body.append(video);
  const hls = new Hls({ lowLatencyMode: lowLatency });
  const errors = [];
  hls.on(Hls.Events.ERROR, (_e, data) => { if (data.fatal) errors.push(data.details); });
  hls.loadSource(url);
  hls.attachMedia(video);
  video.play().catch(() => {});
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const samples = [];
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until && errors.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (video.readyState < 2 || video.paused) continue;
    context.drawImage(video, 0, 0, width, height);
    const row = context.getImageData(0, height >> 1, width, 1).data;
    const bar = Math.floor(width / bits);
    let value = 0;
    for (let bit = 0; bit < bits; bit++) {
      if (row[(bit * bar + (bar >> 1)) * 4] > 128) value += 2 ** bit;
    }
    samples.push(Date.now() / 1000 - (start + value / 100));
  }
  hls.destroy();
  return { samples, errors };
}"""


async def play_in_chromium(browser, origin: str, url: str, low_latency: bool, start: float, seconds: float):
    """Glass-to-glass through a real player: hls.js in Chromium plays the stream; every 200 ms
    the shown frame's stamp is read off a canvas: now - (start + stamp). The first 5 s (hls.js
    finding its position) are left out."""
    page = await browser.new_page()
    try:
        await page.goto(f"{origin}/healthz")
        await page.add_script_tag(url=f"{origin}/static/vendor/hls.js")
        played = await page.evaluate(PLAYER_JS, [url, low_latency, seconds, start, BITS, W, H])
    finally:
        await page.close()
    if played["errors"]:
        print(f"  hls.js errors ({'LL-HLS' if low_latency else 'regular'}): {played['errors']}")
    return played["samples"][25:]


def cpu_of(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def ffmpeg_processes(marker: str, flag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "ffmpeg" and flag in cmdline and any(marker in a for a in cmdline):
            found.append(proc)
    return found


async def cpu_share(processes: list[psutil.Process], seconds: float) -> float:
    before = cpu_of(processes)
    await asyncio.sleep(seconds)
    return (cpu_of(processes) - before) / seconds


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="rh-bench-live-"))
    os.chmod(work, 0o711)
    api_port = free_port()
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
        "DATA_DIR": str(work / "data"),
        "ADMIN_TOKEN": "bench-admin-token-0123456789abcdef",
        "MASTER_ENCRYPTION_KEY": "bench-master-key-0123456789abcdef",
        "EMBEDDED_WORKER": "false",
        "LIVE_ENABLED": "true",
        "LIVE_NGINX_DIR": str(work / "nginx"),
        "LIVE_NGINX_PATH": shutil.which("nginx") or "/usr/sbin/nginx",
        "LIVE_RTMP_BIND": "127.0.0.1",
        "LIVE_RTMP_PORT": str(free_port()),
        "LIVE_STAT_PORT": str(free_port()),
        "LIVE_CALLBACK_URL": f"http://127.0.0.1:{api_port}",
        "OUTBOUND_ALLOW_PRIVATE": "true",
        "RATE_LIMIT_ENABLED": "false",
        "JOB_POLL_INTERVAL": "0.1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import uvicorn

    from reelhouse.app import create_app
    from reelhouse.config import Settings
    from reelhouse.core.db.migrate import run_migrations
    from reelhouse.core.jobs.worker import Worker, WorkerOptions
    from reelhouse.core.media.probe import MediaInfo, VideoStreamInfo
    from reelhouse.core.media.profiles import builtin_profile, plan_ladder
    from reelhouse.core.runtime import build_runtime
    from reelhouse.live.kinds import LIVE_KINDS
    from reelhouse.live.plugin import setup
    from reelhouse.live.tasks.transcode import ladder_args

    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    domain = setup(runtime)
    await run_migrations(runtime.engine)
    app = create_app(settings, runtime=runtime, background=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    options = WorkerOptions(
        worker_id="bench", concurrency=6, poll_interval=0.1, kinds=list(LIVE_KINDS), capabilities=["cpu", "libx264"]
    )
    worker = Worker(runtime.engine, runtime.registry, options)
    working = asyncio.create_task(worker.run())
    live = domain.services.settings
    headers = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    results: dict[str, list[float]] = {}
    playwright = browser = None
    if args.player:
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=10) as client:
            for seg, ll in ((1, False), (2, False), (1, True)):
                object.__setattr__(live, "segment_seconds", seg)
                object.__setattr__(live, "ll_hls", ll)
                label = f"{seg}s" + (" LL-HLS" if ll else "")
                # (a) reelhouse
                stream = (await client.post("/v1/streams", json={"title": f"bench {label}", "record": False})).json()
                publisher, start = await publish(f"rtmp://127.0.0.1:{live.rtmp_port}/live/{stream['publish_key']}",
                                                 args.seconds + 5)  # fmt: skip
                base = f"/v1/streams/{stream['id']}/live"
                variant = None
                for _ in range(200):
                    master = await client.get(f"{base}/master.m3u8")
                    if master.status_code == 200:
                        variant = next(x for x in master.text.splitlines() if x and not x.startswith("#"))
                        break
                    await asyncio.sleep(0.1)
                assert variant is not None, "no live playlist"
                folder = variant.rsplit("/", 1)[0]

                async def playlist(variant=variant, base=base):
                    response = await client.get(f"{base}/{variant}")
                    return response.text if response.status_code == 200 else ""

                async def segment(name, folder=folder, base=base):
                    return (await client.get(f"{base}/{folder}/{name}")).content

                async def blocking_playlist(directive, variant=variant, base=base):
                    response = await client.get(f"{base}/{variant}", params=directive)
                    return response.text if response.status_code == 200 else ""

                if ll:
                    results[f"reelhouse {label}"] = await watch_parts(blocking_playlist, segment, start, args.seconds)
                else:
                    results[f"reelhouse {label}"] = await watch(playlist, segment, start, args.seconds)
                await publisher.wait()
                await asyncio.sleep(live.input_timeout.total_seconds() + 2)

                # (b) bare ffmpeg: same ingest, same ladder arguments, HLS into a folder
                bare = work / f"bare-{seg}{'-ll' if ll else ''}"
                video = VideoStreamInfo(index=0, codec="h264", width=W, height=H, fps=FPS)
                info = MediaInfo(path="x", format_name="flv", video_streams=[video], audio_streams=[], duration=None)
                rungs = plan_ladder(builtin_profile("hls-default"), info)
                for r in rungs:
                    (bare / r.name).mkdir(parents=True)
                # nginx's on_publish needs a known key: publish with a second stream's key, pull its playback id
                other = (await client.post("/v1/streams", json={"title": f"bare {label}", "record": False})).json()
                pull = f"rtmp://127.0.0.1:{live.rtmp_port}/live/{other['playback_id']}"
                publisher, start = await publish(f"rtmp://127.0.0.1:{live.rtmp_port}/live/{other['publish_key']}",
                                                 args.seconds + 5)  # fmt: skip
                await asyncio.sleep(0.3)
                transcoder = await asyncio.create_subprocess_exec(
                    FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                    *ladder_args(pull, bare, rungs, info, live, 5_000_000),
                )  # fmt: skip
                playlist_path = bare / rungs[0].name / "index.m3u8"

                async def bare_playlist(path=playlist_path):
                    return path.read_text() if path.exists() else ""

                async def bare_segment(name, folder=bare / rungs[0].name):
                    path = folder / name
                    return path.read_bytes() if path.exists() else b""

                results[f"bare ffmpeg {label}"] = await watch(bare_playlist, bare_segment, start, args.seconds)
                await publisher.wait()
                with contextlib.suppress(ProcessLookupError):
                    transcoder.terminate()
                await transcoder.wait()
                await asyncio.sleep(live.input_timeout.total_seconds() + 2)

            # LL-HLS beside regular 1 s segments at the same time, so that both see the same load
            # of the (shared) machine: each stream's transcode reads the settings when it starts.
            object.__setattr__(live, "segment_seconds", 1)
            followers, publishers, players = [], [], []
            origin = f"http://127.0.0.1:{api_port}"
            for ll in (False, True):
                object.__setattr__(live, "ll_hls", ll)
                stream = (await client.post("/v1/streams", json={"title": f"pair {ll}", "record": False})).json()
                publisher, start = await publish(f"rtmp://127.0.0.1:{live.rtmp_port}/live/{stream['publish_key']}",
                                                 args.seconds + 20)  # fmt: skip
                publishers.append(publisher)
                base = f"/v1/streams/{stream['id']}/live"
                variant = None
                for _ in range(300):
                    master = await client.get(f"{base}/master.m3u8")
                    if master.status_code == 200:
                        variant = next(x for x in master.text.splitlines() if x and not x.startswith("#"))
                        if (await client.get(f"{base}/{variant}")).status_code == 200:
                            break  # the transcode runs with this stream's settings
                    await asyncio.sleep(0.1)
                assert variant is not None, "no live playlist"

                async def plain(variant=variant, base=base):
                    response = await client.get(f"{base}/{variant}")
                    return response.text if response.status_code == 200 else ""

                async def blocking(directive, variant=variant, base=base):
                    response = await client.get(f"{base}/{variant}", params=directive)
                    return response.text if response.status_code == 200 else ""

                async def media(name, folder=variant.rsplit("/", 1)[0], base=base):
                    return (await client.get(f"{base}/{folder}/{name}")).content

                if ll:
                    followers.append(watch_parts(blocking, media, start, args.seconds))
                else:
                    followers.append(watch(plain, media, start, args.seconds))
                if browser is not None:
                    link = (await client.get(f"/v1/streams/{stream['id']}/link")).json()["url"]
                    players.append(play_in_chromium(browser, origin, link, ll, start, args.seconds))
            object.__setattr__(live, "ll_hls", False)
            together = await asyncio.gather(*followers, *players)
            results["at once: reelhouse 1s"], results["at once: reelhouse 1s LL-HLS"] = together[:2]
            if players:
                results["at once: hls.js 1s"], results["at once: hls.js 1s LL-HLS"] = together[2:]
            for publisher in publishers:
                await publisher.wait()
            await asyncio.sleep(live.input_timeout.total_seconds() + 2)

            # CPU of one codec-copy restream: reelhouse's task vs a bare ffmpeg, same stream.
            listen_a, listen_b = free_port(), free_port()
            listeners = [
                await asyncio.create_subprocess_exec(
                    FFMPEG,
                    "-loglevel",
                    "error",
                    "-listen",
                    "1",
                    "-i",
                    f"rtmp://127.0.0.1:{port}/app/k",
                    "-c",
                    "copy",
                    "-f",
                    "null",
                    "-",
                )
                for port in (listen_a, listen_b)
            ]
            stream = (await client.post("/v1/streams", json={"title": "bench restream", "record": False})).json()
            await client.post(f"/v1/streams/{stream['id']}/destinations",
                              json={"name": "a", "url": f"rtmp://127.0.0.1:{listen_a}/app", "key": "k"})  # fmt: skip
            publisher, _ = await publish(f"rtmp://127.0.0.1:{live.rtmp_port}/live/{stream['publish_key']}",
                                         args.cpu_seconds + 20)  # fmt: skip
            await asyncio.sleep(6)
            bare_copy = await asyncio.create_subprocess_exec(
                FFMPEG, "-loglevel", "error", "-i", live.ingest_url(stream["playback_id"]), "-map", "0", "-c", "copy",
                "-f", "flv", f"rtmp://127.0.0.1:{listen_b}/app/k",
            )  # fmt: skip
            await asyncio.sleep(3)
            ours = ffmpeg_processes(f"{listen_a}/app", "-progress")
            theirs = [psutil.Process(bare_copy.pid)]
            share_ours, share_bare = await asyncio.gather(
                cpu_share(ours, args.cpu_seconds), cpu_share(theirs, args.cpu_seconds)
            )
            bare_copy.terminate()
            await bare_copy.wait()
            await publisher.wait()
            for proc in listeners:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    finally:
        if browser is not None:
            await browser.close()
        if playwright is not None:
            await playwright.stop()
        worker.request_stop()
        await asyncio.wait_for(working, 30)
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        shutil.rmtree(work, ignore_errors=True)

    print(f"live latency (segment first listed - capture of its first frame), {args.seconds} s per run:")
    for name, values in results.items():
        if values:
            q = statistics.quantiles(values, n=20) if len(values) > 2 else values
            print(f"  {name:<34} p50 {statistics.median(values):5.2f} s   p95 {q[-1]:5.2f} s   n={len(values)}")
    for label in ("1s", "2s", "1s LL-HLS"):
        ours, bare = results.get(f"reelhouse {label}"), results.get(f"bare ffmpeg {label}")
        if ours and bare:
            print(f"  ratio reelhouse/bare ({label}): {statistics.median(ours) / statistics.median(bare):.2f}")
    for regular_name in ("reelhouse 1s", "at once: reelhouse 1s", "at once: hls.js 1s"):
        low, plain = results.get(f"{regular_name} LL-HLS"), results.get(regular_name)
        if low and plain:
            ratio_ll = statistics.median(low) / statistics.median(plain)
            print(f"  ratio LL-HLS/regular ({regular_name}): {ratio_ll:.2f}")
    ratio = share_ours / max(share_bare, 1e-6)
    print(
        f"codec-copy restream CPU: reelhouse {share_ours * 100:.1f} % of a core, "
        f"bare ffmpeg {share_bare * 100:.1f} % (ratio {ratio:.2f}; processes measured: {len(ours)})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--cpu-seconds", type=float, default=15)
    parser.add_argument("--player", action=argparse.BooleanOptionalAction, default=True,
                        help="also play the at-once streams with hls.js in Chromium (glass-to-glass)")  # fmt: skip
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
