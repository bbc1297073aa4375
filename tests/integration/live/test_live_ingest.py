"""Acceptance of the live path with real ffmpeg and nginx-rtmp: publish with the right key ->
live within 2 s, HLS plays (ffprobe) within 10 s, telemetry within 10 % of the source; a wrong
key and a second publisher of a live key are refused; when the publisher stops, the recording
becomes a VOD asset (through an encode job) within 2 s of the published duration, seekable."""

from __future__ import annotations

import asyncio
import time

import pytest

from reelhouse.encode import assets as asset_store

from .conftest import FFMPEG, SOURCE, admin_headers, create_stream, ffprobe_json, publish, publish_url, wait_until

PUBLISH_SECONDS = 20  # nginx's video/audio split (its first 10 s window) must be there well before the end
LIVE_BOUND = 4.0  # acceptance: 2 s (measured by bench/live.py)
PLAY_BOUND = 20.0  # acceptance: 10 s


@pytest.mark.slow
async def test_publish_live_hls_telemetry_refusals_and_vod(client, domain, runtime, worker, server):
    stream = await create_stream(client)
    key = stream["publish_key"]
    assert key != stream["playback_id"] and stream["playback_id"] not in key
    assert "publish_key" not in (await client.get(f"/v1/streams/{stream['id']}")).json()

    wrong = await publish(publish_url(domain, "live_not-the-key"), 3)
    assert await wrong.wait(20) != 0, "a wrong key must be refused"
    assert not (await client.get(f"/v1/streams/{stream['id']}")).json()["is_live"]

    started = time.monotonic()
    publisher = await publish(publish_url(domain, key), PUBLISH_SECONDS)
    try:

        async def is_live():
            return (await client.get(f"/v1/streams/{stream['id']}")).json()["is_live"]

        await wait_until(is_live, LIVE_BOUND + 1, "the stream to go live")
        went_live = time.monotonic() - started
        # Bounds for a loaded, shared machine; bench/live.py measures the real figures.
        assert went_live <= LIVE_BOUND, f"live after {went_live:.2f}s"

        twice = await publish(publish_url(domain, key), 3)
        assert await twice.wait(20) != 0, "a second publisher of a live key must be refused"

        master = f"{server}/v1/streams/{stream['id']}/live/master.m3u8"
        headers = "".join(f"{k}: {v}\r\n" for k, v in admin_headers().items())

        async def plays():
            try:
                return await ffprobe_json("-headers", headers, "-show_streams", master, timeout=15)
            except AssertionError:
                return None

        probed = await wait_until(plays, PLAY_BOUND, "the live HLS to play", interval=0.5)
        playing = time.monotonic() - started
        assert playing <= PLAY_BOUND, f"HLS played after {playing:.1f}s"
        print(f"live after {went_live:.2f}s, HLS played after {playing:.2f}s")
        video = next(s for s in probed["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (SOURCE["width"], SOURCE["height"])

        # A signed link plays without credentials.
        link = (await client.get(f"/v1/streams/{stream['id']}/link")).json()["url"]
        assert (await client.get(link, headers={"Authorization": ""})).status_code == 200

        async def telemetry():
            body = (await client.get(f"/v1/streams/{stream['id']}")).json()
            found = body["telemetry"] or {}
            return found if found.get("video_bitrate") else None

        measured = await wait_until(telemetry, PUBLISH_SECONDS, "telemetry with a bitrate", interval=0.5)
        assert (measured["width"], measured["height"]) == (SOURCE["width"], SOURCE["height"])
        assert abs(measured["fps"] - SOURCE["fps"]) <= SOURCE["fps"] * 0.1
        assert measured["video_codec"] and measured["viewers"] >= 1
        metrics = (await client.get("/metrics")).text
        assert "webencode_streams_live 1.0" in metrics
        assert f'reelhouse_live_stream_fps{{stream="{stream["id"]}"}}' in metrics

        # Every reading while the publisher runs; the bitrate is compared with what it sent.
        readings = [measured]
        finished = asyncio.create_task(publisher.wait(PUBLISH_SECONDS + 20))
        while not finished.done():
            found = await telemetry()
            if found and found["uptime_seconds"] != readings[-1]["uptime_seconds"]:
                readings.append(found)
            await asyncio.wait({finished}, timeout=0.5)
        assert finished.result() == 0
    finally:
        await publisher.stop()

    async def offline():
        return not (await client.get(f"/v1/streams/{stream['id']}")).json()["is_live"]

    await wait_until(offline, 10, "the stream to end")

    async def encode_job():
        recordings = (await client.get(f"/v1/streams/{stream['id']}/recordings")).json()["recordings"]
        return recordings[0] if recordings and recordings[0]["encode_job_id"] else None

    recording = await wait_until(encode_job, 60, "the recording's encode job", interval=0.5)

    async def job_done():
        job = (await client.get(f"/v1/jobs/{recording['encode_job_id']}")).json()
        assert job["status"] not in ("failed", "dead", "cancelled"), job
        return job if job["status"] == "completed" else None

    await wait_until(job_done, 120, "the VOD encode", interval=0.5)
    asset = await asset_store.get_asset(runtime.engine, job_id=recording["encode_job_id"])
    assert asset is not None and asset["status"] == "ready"
    assert abs(asset["duration"] - PUBLISH_SECONDS) <= 2.0, asset["duration"]
    # It plays with seeking: a VOD playlist (every segment listed, ENDLIST), and ffmpeg seeks to
    # 8 s through the master playlist and decodes from there.
    vod = f"{server}/media/{asset['master_key']}"
    master_text = (await client.get(vod)).text
    variant = next(line for line in master_text.splitlines() if line and not line.startswith("#"))
    variant_text = (await client.get(vod.rsplit("/", 1)[0] + "/" + variant)).text
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in variant_text and "#EXT-X-ENDLIST" in variant_text
    headers = "".join(f"{k}: {v}\r\n" for k, v in admin_headers().items())
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-v", "warning", "-headers", headers, "-ss", "8", "-i", vod, "-map", "0:v:0", "-frames:v", "10",
        "-f", "framecrc", "-", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-400:]
    frames = [line for line in out.decode().splitlines() if line and not line.startswith("#")]
    assert len(frames) == 10, (out.decode()[-400:], err.decode()[-1500:], master_text, variant_text[:600])
    # The telemetry's bitrate against what the publisher's muxer wrote (its closing summary),
    # not the encoder's target: x264 on this pattern sends ~2 % over its -b:v, and the
    # comparison is of reelhouse's measure, not of x264's rate control. The last reading of
    # the publish covers its last 10 s of media (ingest.py's RateMeter); nginx's own bw_video
    # read 9-10 % high (ingest.py says why), which a 10 % bound could not take.
    sent = publisher.sent_bitrates()
    last = readings[-1]
    print(f"sent {sent}; reported {[(r['uptime_seconds'], r['bitrate'], r['video_bitrate']) for r in readings]}")
    assert last["uptime_seconds"] >= PUBLISH_SECONDS - 5, readings  # taken near the end, with the split
    total = sent["video"] + sent["audio"]
    for reading in readings:  # every one, not a median: each covers up to 10 s of media
        assert abs(reading["bitrate"] - total) <= total * 0.10, (reading, sent)
        assert abs(reading["video_bitrate"] - sent["video"]) <= sent["video"] * 0.10, (reading, sent)
    assert abs(last["audio_bitrate"] - sent["audio"]) <= sent["audio"] * 0.20, (last, sent)  # a small share
