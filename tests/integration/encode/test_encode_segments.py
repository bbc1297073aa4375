"""Segment-parallel encode: a source split at keyframes, each rung of each piece a task of its
own on whichever worker claims it, stitched into gapless HLS (and MP4) through storage only."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

import media_fixtures
from reelhouse.core.jobs.errors import TransientError
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.encode import assets as asset_store
from reelhouse.encode import segmented as segmented_module
from reelhouse.encode.pipeline import ENCODE_KINDS
from tests.integration.encode.conftest import (
    ADMIN_TOKEN,
    admin_headers,
    check_gapless,
    live_server,
    storage_keys,
    wait_for_job,
    wait_for_workers,
    worker_processes,
    ytdlp_download,
)

FPS = 25
DURATION = 8.0
PAIR = {
    "name": "seg-pair",
    "kind": "hls",
    "segment_seconds": 2,
    "renditions": [
        {
            "name": "240p",
            "width": 320,
            "height": 240,
            "video_bitrate": "300k",
            "audio_bitrate": "64k",
            "preset": "veryfast",
        },
        {
            "name": "144p",
            "width": 192,
            "height": 144,
            "video_bitrate": "120k",
            "audio_bitrate": "48k",
            "preset": "veryfast",
        },
    ],
}
SMALL_MP4 = {
    "name": "seg-mp4",
    "kind": "mp4",
    "renditions": [{"name": "144p", "width": 192, "height": 144, "video_bitrate": "120k", "preset": "ultrafast"}],
}


@pytest.fixture(autouse=True)
def segment_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCODE_SEGMENT_MIN_SECONDS", "2")
    monkeypatch.setenv("ENCODE_SEGMENTS_PER_WORKER", "2")


@pytest.fixture(scope="session")
def clip_8s(clip_dir: Path) -> Path:
    """8 s of 320x240 at 25 fps, a keyframe every second, with a tone."""
    return media_fixtures.make_clip(clip_dir / "8s.mp4", width=320, height=240, duration=DURATION, fps=FPS)


# One frame is 1/FPS: the shared checker is told this clip's rate.
assert_gapless = functools.partial(check_gapless, duration=DURATION, fps=FPS)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite: the in-process test below
@pytest.mark.parametrize("backend", ["s3"], indirect=True)
async def test_ladder_split_across_two_worker_processes_plays_gaplessly(
    runtime, settings, domain, backend, clip_8s, tmp_path
):
    env = dict(os.environ)
    await domain.service.storage().put("inputs/8s.mp4", clip_8s)
    async with worker_processes({f"segment-proc-{n}": env for n in range(2)}, tmp_path / "logs"):
        await wait_for_workers(runtime.engine, 2)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_api(runtime, settings)),
            base_url="http://testserver",
            headers=admin_headers(),
            timeout=60,
        ) as client:
            assert (await client.post("/v1/profiles", json=PAIR)).status_code == 201
            created = await client.post("/v1/jobs", json={"source_key": "inputs/8s.mp4", "profile": "seg-pair"})
            assert created.status_code == 201, created.text
            job_id = created.json()["job_id"]
            etas: list[dict] = []

            deadline = asyncio.get_running_loop().time() + 240
            while True:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                outputs = await client.get(f"/v1/jobs/{job_id}/outputs")
                if outputs.status_code == 200 and outputs.json()["segments"]:
                    etas.append(outputs.json()["segments"])
                if job["status"] in ("completed", "failed", "dead", "cancelled"):
                    break
                assert asyncio.get_running_loop().time() < deadline, job
                await asyncio.sleep(0.3)
    logs = {p.name: p.read_text()[-3000:] for p in (tmp_path / "logs").iterdir()}
    assert job["status"] == "completed", (job, logs)
    segments = [t for t in job["tasks"] if t["kind"] == "encode.segment"]
    stitch = [t for t in job["tasks"] if t["kind"] == "encode.stitch"]
    pieces = {t["result"]["piece"] for t in segments}
    assert len(pieces) >= 3 and len(segments) == 2 * len(pieces) and len(stitch) == 1
    # Both processes took pieces.
    assert {t["result"]["worker"] for t in segments} == {"segment-proc-0", "segment-proc-1"}
    # Progress and ETA were aggregated over the pieces while they ran.
    assert any(0 < e["progress"] < 1 and e["eta_seconds"] for e in etas), etas
    assert etas[-1]["pieces_done"] == etas[-1]["pieces"] == len(segments)

    asset = await asset_store.get_asset(runtime.engine, job_id=job_id)
    assert asset["status"] == "ready" and [r["name"] for r in asset["renditions"]] == ["240p", "144p"]
    # No piece is left in storage: only the published ladder.
    keys = await storage_keys(domain, asset["output_prefix"])
    assert not [k for k in keys if "/parts/" in k]
    async with live_server(runtime, settings) as base:
        auth = ["-headers", f"Authorization: Bearer {ADMIN_TOKEN}\r\n"]
        for rung in asset["renditions"]:
            keyframes = await assert_gapless(base + rung["url"], *auth)
            assert keyframes == [0.0, 2.0, 4.0, 6.0]  # closed GOPs on the 2 s grid, on every rung
        async with httpx.AsyncClient(base_url=base, headers=admin_headers()) as http:
            link = (await http.get(f"/v1/assets/{asset['id']}/link")).json()
        out = tmp_path / "dl"
        await ytdlp_download(base + link["url"], out, timeout=120)
    (downloaded,) = list(out.iterdir())
    await assert_gapless(str(downloaded))


def _api(runtime, settings):
    from reelhouse.app import create_app

    return create_app(settings, runtime=runtime, background=False)


@contextlib.asynccontextmanager
async def in_process_workers(runtime, count: int) -> AsyncIterator[list[Worker]]:
    workers_ = [
        Worker(
            runtime.engine,
            runtime.registry,
            WorkerOptions(
                worker_id=f"segment-loop-{n}",
                concurrency=2,
                poll_interval=0.1,
                cancel_poll_interval=0.2,
                progress_interval=0.2,
                kinds=list(ENCODE_KINDS),
                shutdown_grace=2,
            ),
        )
        for n in range(count)
    ]
    runs = [asyncio.create_task(w.run()) for w in workers_]
    await wait_for_workers(runtime.engine, count)
    try:
        yield workers_
    finally:
        for w in workers_:
            w.request_stop()
        await asyncio.wait_for(asyncio.gather(*runs), 30)


async def test_every_profile_of_a_multi_profile_job_is_encoded_and_a_failed_piece_retries_alone(
    client, runtime, domain, clip_8s, tmp_path, monkeypatch
):
    real = segmented_module.encode_segment
    failed: list[tuple[str, int]] = []

    async def flaky(source, output, rendition, info, piece, **kwargs):
        if rendition.name == "240p" and piece.index == 1 and not failed:
            failed.append((rendition.name, piece.index))
            raise TransientError("injected: this piece's worker lost its disk")
        return await real(source, output, rendition, info, piece, **kwargs)

    monkeypatch.setattr(segmented_module, "encode_segment", flaky)
    for profile in (PAIR, SMALL_MP4):
        assert (await client.post("/v1/profiles", json=profile)).status_code == 201
    await domain.service.storage().put("inputs/8s.mp4", clip_8s)
    async with in_process_workers(runtime, 2):
        created = await client.post(
            "/v1/jobs", json={"source_key": "inputs/8s.mp4", "profiles": ["seg-pair", "seg-mp4"]}
        )
        assert created.status_code == 201, created.text
        assert created.json()["profiles"] == ["seg-pair", "seg-mp4"]
        job = await wait_for_job(client, created.json()["job_id"], timeout=180)
    assert job["status"] == "completed", job
    assert failed == [("240p", 1)]
    segments = [t for t in job["tasks"] if t["kind"] == "encode.segment"]
    # 4 pieces x (2 HLS rungs + 1 MP4 rung), and one stitch per profile.
    assert len(segments) == 12 and len([t for t in job["tasks"] if t["kind"] == "encode.stitch"]) == 2
    retried = [t for t in segments if t["attempts"] > 1]
    assert [(t["result"]["rung"], t["result"]["piece"], t["attempts"]) for t in retried] == [("240p", 1, 2)]

    assets = await asset_store.list_assets_of_job(runtime.engine, int(job["id"]))
    assert [(a["profile"], a["kind"], a["status"]) for a in assets] == [
        ("seg-pair", "hls", "ready"),
        ("seg-mp4", "mp4", "ready"),
    ]
    prefixes = [a["output_prefix"] for a in assets]
    assert prefixes == [f"encodes/job-{job['id']}/seg-pair", f"encodes/job-{job['id']}/seg-mp4"]
    mp4 = assets[1]
    target = tmp_path / "out.mp4"
    target.write_bytes((await client.get(mp4["renditions"][0]["url"])).content)
    assert await assert_gapless(str(target)) == [0.0, 2.0, 4.0, 6.0]
    hls = tmp_path / "hls"
    for key in await storage_keys(domain, assets[0]["output_prefix"]):
        path = hls / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((await client.get(f"/media/{key}")).content)
    for rung in assets[0]["renditions"]:
        await assert_gapless(str(hls / rung["key"]))


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # the cancel path is the same on SQLite
async def test_cancelling_a_segment_parallel_job_leaves_no_piece_behind(client, runtime, domain, clip_1080p):
    from reelhouse.encode.models import assets, encode_segments

    await domain.service.storage().put("inputs/1080p.mp4", clip_1080p)
    async with in_process_workers(runtime, 2):
        created = await client.post("/v1/jobs", json={"source_key": "inputs/1080p.mp4"})
        job_id, prefix = created.json()["job_id"], created.json()["output_prefix"]

        def piece_stored(job: dict) -> bool:
            done = [t for t in job["tasks"] if t["kind"] == "encode.segment" and t["status"] == "succeeded"]
            return bool(done) or job["status"] in ("completed", "failed", "dead", "cancelled")

        job = await wait_for_job(client, job_id, until=piece_stored, timeout=180)
        assert job["status"] == "processing", job
        assert [k for k in await storage_keys(domain, prefix) if "/parts/" in k]
        assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
        job = await wait_for_job(client, job_id, timeout=60)
    assert job["status"] == "cancelled", job
    assert await storage_keys(domain, prefix) == []
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(select(assets.c.id).where(assets.c.job_id == job_id))).all() == []
        assert (await conn.execute(select(encode_segments.c.id))).all() == []
