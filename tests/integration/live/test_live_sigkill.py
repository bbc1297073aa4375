"""SIGKILL of the worker running a live transcode: its ffmpeg dies with it, another worker
claims the task when the lease runs out, and the live playlist continues with a
discontinuity (same media sequence, growing) instead of a dead stream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from .conftest import admin_headers, create_stream, ffprobe_json, publish, publish_url, wait_until

WORKER = Path(__file__).with_name("live_worker.py")
LEASE = 3.0
PUBLISH_SECONDS = 40


def start_worker(name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(WORKER), name, str(LEASE)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def transcoders(playback_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if (
            proc.info.get("name") == "ffmpeg"
            and "-var_stream_map" in cmdline
            and any(playback_id in a for a in cmdline)
        ):
            found.append(proc)
    return found


@pytest.mark.slow
async def test_sigkill_of_the_live_transcode_worker_resumes_with_a_discontinuity(client, domain, server):
    stream = await create_stream(client, record=False)
    workers = [start_worker("live-a")]
    publisher = await publish(publish_url(domain, stream["publish_key"]), PUBLISH_SECONDS)
    base = f"/v1/streams/{stream['id']}/live"
    try:

        async def variant_playlist():
            response = await client.get(f"{base}/master.m3u8")
            if response.status_code != 200:
                return None
            variant = next(line for line in response.text.splitlines() if line and not line.startswith("#"))
            playlist = await client.get(f"{base}/{variant}")
            return (variant, playlist.text) if playlist.status_code == 200 and "#EXTINF" in playlist.text else None

        variant, before = await wait_until(variant_playlist, 30, "the live playlist")
        assert "#EXT-X-DISCONTINUITY\n" not in before
        assert len(transcoders(stream["playback_id"])) == 1

        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)

        async def transcoder_gone():
            return not transcoders(stream["playback_id"])

        await wait_until(transcoder_gone, 5, "the killed worker's ffmpeg to die with it")
        workers.append(start_worker("live-b"))

        async def resumed():
            text = (await client.get(f"{base}/{variant}")).text
            if "#EXT-X-DISCONTINUITY\n" not in text:
                return None
            after_seam = text.split("#EXT-X-DISCONTINUITY\n", 1)[1]
            return text if after_seam.count("#EXTINF") >= 2 else None

        after = await wait_until(resumed, 30, "the playlist to continue after the takeover", interval=0.5)
        sequence = int(after.split("#EXT-X-MEDIA-SEQUENCE:", 1)[1].split("\n", 1)[0])
        before_sequence = int(before.split("#EXT-X-MEDIA-SEQUENCE:", 1)[1].split("\n", 1)[0])
        assert sequence >= before_sequence
        assert "#EXT-X-ENDLIST" not in after
        headers = "".join(f"{k}: {v}\r\n" for k, v in admin_headers().items())
        probed = await ffprobe_json("-headers", headers, "-show_streams", f"{server}{base}/master.m3u8")
        assert any(s["codec_type"] == "video" for s in probed["streams"])
        assert len(transcoders(stream["playback_id"])) == 1
    finally:
        await publisher.stop()
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        await asyncio.sleep(0)
