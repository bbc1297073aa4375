"""End to end on both storage backends (and both databases through `db_url`): uploads become HLS
ladders that ffprobe and yt-dlp play over HTTP; small sources are not upscaled; cancelling a
running transcode stops ffmpeg and leaves neither files nor an asset behind."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest
from sqlalchemy import select

from media_fixtures import ffmpeg_children, ffprobe_json
from reelhouse.encode.models import assets, renditions
from tests.app_support import run_tool
from tests.integration.encode.conftest import (
    ADMIN_TOKEN,
    admin_headers,
    live_server,
    scratch_leftovers,
    storage_keys,
    wait_for_job,
)

BOTH_BACKENDS = pytest.mark.parametrize("backend", ["fs", "s3"], indirect=True)
LADDER_1080P = [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
SEGMENT_SECONDS = 6


def extinf_durations(playlist: str) -> list[float]:
    return [float(line.split(":", 1)[1].split(",")[0]) for line in playlist.splitlines() if line.startswith("#EXTINF:")]


def video_sizes(ffprobe_output: str) -> list[tuple[int, int]]:
    streams = json.loads(ffprobe_output)["streams"]
    return [(s["width"], s["height"]) for s in streams if s["codec_type"] == "video"]


async def ffprobe_url(url: str, *headers: str) -> list[tuple[int, int]]:
    argv = ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams"]
    if headers:
        argv += ["-headers", "".join(f"{h}\r\n" for h in headers)]
    code, out, err = await run_tool(*argv, url)
    assert code == 0, err
    return video_sizes(out)


@pytest.mark.slow
@BOTH_BACKENDS
async def test_uploaded_1080p_clip_becomes_a_four_rung_ladder_playable_over_http(
    runtime, settings, domain, backend, clip_1080p
):
    async with (
        live_server(runtime, settings) as base,
        httpx.AsyncClient(base_url=base, headers=admin_headers(), timeout=120) as http,
    ):
        created = await http.post(
            "/v1/jobs",
            data={"profile": "hls-default", "preset": "ultrafast"},
            files={"file": ("my clip.mp4", clip_1080p.read_bytes(), "video/mp4")},
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        assert created.json()["upload"]["key"].endswith("/my_clip.mp4")

        seen: list[dict] = []

        def record(job: dict) -> bool:
            running = [t for t in job["tasks"] if t["status"] == "running" and t["progress_detail"]]
            seen.extend(t["progress_detail"] | {"job_progress": job["progress"]} for t in running)
            return job["status"] in ("completed", "failed", "dead", "cancelled")

        job = await wait_for_job(http, job_id, until=record)
        assert job["status"] == "completed", job
        assert job["progress"] == 1.0 and job["error"] is None
        encoding = [d for d in seen if d.get("stage") == "encoding" and d.get("eta_seconds") is not None]
        assert encoding, f"no encoding progress with an ETA was visible: {seen}"
        assert any(d["fps"] and d["speed"] for d in encoding)
        assert [t["kind"] for t in job["tasks"]] == ["encode.transcode", "encode.probe"]
        transcode = job["tasks"][0]
        assert transcode["attempts"] == 1
        assert [(r["name"], r["width"], r["height"]) for r in transcode["result"]["renditions"]] == LADDER_1080P

        asset = (await http.get(f"/v1/jobs/{job_id}/outputs")).json()
        assert asset["status"] == "ready" and asset["kind"] == "hls"
        assert (asset["width"], asset["height"]) == (1920, 1080) and asset["duration"] == pytest.approx(20, abs=0.2)
        assert [(r["name"], r["width"], r["height"]) for r in asset["renditions"]] == LADDER_1080P
        assert all(r["codecs"].startswith("avc1.") and r["codecs"].endswith("mp4a.40.2") for r in asset["renditions"])
        assert (await http.get(f"/v1/assets/{asset['id']}")).json() == asset

        # ffprobe reads the whole ladder through the authenticated media route...
        auth = f"Authorization: Bearer {ADMIN_TOKEN}"
        assert sorted(await ffprobe_url(base + asset["master_url"], auth)) == sorted((w, h) for _, w, h in LADDER_1080P)
        for rung in asset["renditions"]:
            assert await ffprobe_url(base + rung["url"], auth) == [(rung["width"], rung["height"])]
            playlist = await http.get(rung["url"])
            assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
            durations = extinf_durations(playlist.text)
            assert len(durations) == rung["segment_count"] == 4
            assert all(abs(d - SEGMENT_SECONDS) <= 0.5 for d in durations[:-1]), durations
            assert durations[-1] <= SEGMENT_SECONDS + 0.5 and sum(durations) == pytest.approx(20, abs=0.5)

        # ...and yt-dlp through a signed link, with no credentials at all.
        link = (await http.get(f"/v1/assets/{asset['id']}/link")).json()
        code, out, err = await run_tool(sys.executable, "-m", "yt_dlp", "--ignore-config", "-J", base + link["url"])
        assert code == 0, err
        formats = [f for f in json.loads(out)["formats"] if f.get("vcodec") not in (None, "none")]
        assert sorted((f["width"], f["height"]) for f in formats) == sorted((w, h) for _, w, h in LADDER_1080P)
        assert all(f["protocol"].startswith("m3u8") for f in formats)

        segment_key = asset["master_key"].rsplit("/", 1)[0] + "/720p/seg_00001.ts"  # the run's scope
        ranged = await http.get(f"/media/{segment_key}", headers={"Range": "bytes=0-187"})
        assert ranged.status_code == 206 and ranged.headers["content-type"] == "video/mp2t"
        assert len(ranged.content) == 188 and ranged.content[0] == 0x47  # an MPEG-TS sync byte

    keys = await storage_keys(domain, asset["output_prefix"])
    expected = {asset["master_key"]} | {r["key"] for r in asset["renditions"]}
    assert expected <= set(keys) and len(keys) == 1 + 4 + 4 * 4
    assert scratch_leftovers(domain, settings) == []


@BOTH_BACKENDS
async def test_480p_source_by_storage_key_gets_no_upscaled_rungs(
    client, domain, encode_worker, clip_480p, tmp_path, backend
):
    await domain.service.storage().put("inputs/480p.mp4", clip_480p)
    created = await client.post(
        "/v1/jobs", json={"source_key": "inputs/480p.mp4", "preset": "ultrafast", "output_prefix": "small/one"}
    )
    assert created.status_code == 201, created.text
    job = await wait_for_job(client, created.json()["job_id"])
    assert job["status"] == "completed", job
    probe = next(t for t in job["tasks"] if t["kind"] == "encode.probe")
    assert probe["result"]["planned"] == [
        {"name": "480p", "width": 854, "height": 480},
        {"name": "360p", "width": 640, "height": 360},
    ]
    asset = (await client.get(f"/v1/jobs/{job['id']}/outputs")).json()
    assert asset["output_prefix"] == "encodes/small/one" and asset["source"]["kind"] == "key"
    assert [(r["name"], r["width"], r["height"]) for r in asset["renditions"]] == [
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]
    for rung in asset["renditions"]:
        # Each rung's first segment, fetched through the media route, has the rung's size.
        playlist = (await client.get(rung["url"])).text
        first = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
        segment = await client.get(rung["url"].rsplit("/", 1)[0] + "/" + first)
        assert segment.status_code == 200
        path = tmp_path / f"{rung['name']}.ts"
        path.write_bytes(segment.content)
        sizes = [
            (s["width"], s["height"])
            for s in ffprobe_json(path, "-show_streams")["streams"]
            if s["codec_type"] == "video"
        ]
        assert sizes == [(rung["width"], rung["height"])]
    listed = (await client.get("/v1/jobs", params={"kind": "encode", "status": "completed"})).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert (await client.get("/v1/jobs", params={"kind": "encode", "status": "failed"})).json() == []


async def _wait_for_encoding(client: httpx.AsyncClient, job_id: int) -> None:
    def encoding(job: dict) -> bool:
        return (
            any(
                t["kind"] == "encode.transcode"
                and t["status"] == "running"
                and (t["progress_detail"] or {}).get("stage") == "encoding"
                and (t["progress_detail"] or {}).get("percent", 0) > 0
                for t in job["tasks"]
            )
            and bool(ffmpeg_children())
        ) or job["status"] in ("completed", "failed", "dead", "cancelled")

    job = await wait_for_job(client, job_id, until=encoding)
    assert job["status"] == "processing", job


@BOTH_BACKENDS
async def test_cancelling_a_running_transcode_stops_ffmpeg_and_leaves_nothing(
    client, domain, encode_worker, clip_1080p, settings, backend
):
    await domain.service.storage().put("inputs/1080p.mp4", clip_1080p)
    # The default veryfast ladder takes far longer than the test waits: it is cancelled mid-encode.
    created = await client.post("/v1/jobs", json={"source_key": "inputs/1080p.mp4"})
    job_id = created.json()["job_id"]
    prefix = created.json()["output_prefix"]

    for round_ in ("first run", "after retry"):
        await _wait_for_encoding(client, job_id)
        assert ffmpeg_children(), f"{round_}: no ffmpeg is running"
        async with domain.service.engine.connect() as conn:
            assert (await conn.execute(select(assets.c.status).where(assets.c.job_id == job_id))).scalar() == "encoding"

        cancelled = await client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelling"
        assert [t["status"] for t in cancelled.json()["tasks"]] == ["cancelling"]
        job = await wait_for_job(client, job_id, timeout=30)
        assert job["status"] == "cancelled", job
        for _ in range(50):  # the process group is reaped right after the task ends
            if not ffmpeg_children():
                break
            await asyncio.sleep(0.1)
        assert ffmpeg_children() == [], f"{round_}: ffmpeg survived the cancel"
        assert await storage_keys(domain, prefix) == []
        async with domain.service.engine.connect() as conn:
            assert (await conn.execute(select(assets.c.id).where(assets.c.job_id == job_id))).all() == []
            assert (await conn.execute(select(renditions.c.id))).all() == []
        assert scratch_leftovers(domain, settings) == []
        assert (await client.get(f"/v1/jobs/{job_id}/outputs")).status_code == 404

        if round_ == "first run":
            # Retry through the core endpoint: the transcode runs again and re-creates its asset.
            retried = await client.post(f"/v1/jobs/{job_id}/retry")
            assert retried.status_code == 200 and len(retried.json()["retried_task_ids"]) == 1
    # The source belongs to the caller and survives the cancel.
    assert await storage_keys(domain, "inputs") == ["inputs/1080p.mp4"]
