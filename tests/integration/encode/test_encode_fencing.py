"""Output fencing with real encodes, on both databases and both storage backends: a transcode
run paused past its lease and resumed after another run published the outputs cannot
overwrite or delete them; its writes are refused and logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import pytest
from sqlalchemy import update

from reelhouse.core.db.models import tasks
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.errors import LeaseLost
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.encode.pipeline import KIND_PROBE, KIND_TRANSCODE
from tests.integration.encode.conftest import wait_for_job

BOTH_BACKENDS = pytest.mark.parametrize("backend", ["fs", "s3"], indirect=True)


class PausingStorage:
    """The real storage, with the caller stopped inside its first `put` (after its fencing
    check passed): the worst moment for a process to be paused."""

    def __init__(self, real) -> None:
        self.real = real
        self.reached = asyncio.Event()
        self.resume = asyncio.Event()
        self.puts: list[str] = []

    async def put(self, key, source):
        if not self.reached.is_set():
            self.reached.set()
            await self.resume.wait()
        self.puts.append(key)
        return await self.real.put(key, source)

    def __getattr__(self, name):
        return getattr(self.real, name)


async def snapshot(storage, prefix: str) -> dict[str, str]:
    found = {}
    async with contextlib.aclosing(storage.list(prefix + "/")) as listing:
        async for info in listing:
            found[info.key] = info.etag
    return found


async def run_worker(runtime, kinds, until):
    worker = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(worker_id=f"worker-{kinds[0]}", poll_interval=0.05, kinds=kinds, progress_interval=0.2),
    )
    runner = asyncio.create_task(worker.run())
    try:
        await until()
    finally:
        worker.request_stop()
        await asyncio.wait_for(runner, 60)


@BOTH_BACKENDS
async def test_paused_transcode_cannot_touch_the_winners_outputs(runtime, client, domain, clip_480p, backend, caplog):
    storage = domain.service.storage()
    await storage.put("inputs/480p.mp4", clip_480p)
    created = await client.post(
        "/v1/jobs", json={"source_key": "inputs/480p.mp4", "preset": "ultrafast", "output_prefix": "fenced/one"}
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    queue = TaskQueue(runtime.engine)

    async def transcode_queued() -> None:
        job = await wait_for_job(client, job_id, until=lambda j: any(t["kind"] == KIND_TRANSCODE for t in j["tasks"]))
        assert job["status"] == "processing"

    await run_worker(runtime, [KIND_PROBE], transcode_queued)

    # The stale run: claims the transcode, encodes, and is paused inside its first upload.
    [stale] = await queue.claim("paused-worker", [KIND_TRANSCODE], 1, timedelta(seconds=60))
    pausing = PausingStorage(storage)
    domain.service.storage = lambda: pausing  # only this run gets the pausing wrapper
    ctx = TaskContext(stale, queue, stale.owner, logging.getLogger("test.stale"), progress_interval=0)
    stale_run = asyncio.create_task(runtime.registry.get(KIND_TRANSCODE).handler(ctx))
    await asyncio.wait_for(pausing.reached.wait(), 120)
    del domain.service.storage
    # ...and stays paused past its lease: the database's clock moves past it, the reaper requeues.
    async with runtime.engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == stale.id).values(lease_expires_at=db_now(-1)))
    assert await queue.reap_expired_leases() == 1

    # Another run takes the task over and publishes its outputs.
    async def job_done() -> None:
        await wait_for_job(client, job_id)

    await run_worker(runtime, [KIND_TRANSCODE], job_done)
    job = await wait_for_job(client, job_id)
    assert job["status"] == "completed", job
    asset = (await client.get(f"/v1/jobs/{job_id}/outputs")).json()
    (transcode,) = [t for t in job["tasks"] if t["kind"] == KIND_TRANSCODE]
    winner_scope = f"{asset['output_prefix']}/run-{transcode['fence']}/"
    assert transcode["fence"] == stale.fence + 1 and asset["master_key"].startswith(winner_scope)
    published = await snapshot(storage, asset["output_prefix"])
    assert published and all(key.startswith(winner_scope) for key in published)

    # The paused run resumes: everything it tries after its first (already checked) upload is
    # refused, and that one upload landed in its own scope, which nothing points at.
    caplog.set_level(logging.WARNING, logger="reelhouse.fencing")
    pausing.resume.set()
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(stale_run, 60)
    refusals = [r for r in caplog.records if "stale run refused" in r.getMessage()]
    assert refusals and all(r.fence == stale.fence for r in refusals)
    stale_scope = f"{asset['output_prefix']}/run-{stale.fence}/"
    assert len(pausing.puts) == 1 and pausing.puts[0].startswith(stale_scope)
    after = await snapshot(storage, asset["output_prefix"])
    assert {k: v for k, v in after.items() if k.startswith(winner_scope)} == published  # intact, not rewritten
    assert set(after) - set(published) <= {pausing.puts[0]}
    again = (await client.get(f"/v1/jobs/{job_id}/outputs")).json()
    assert again["status"] == "ready" and again["master_key"] == asset["master_key"]
    master = await client.get(f"/media/{asset['master_key']}")
    assert master.status_code == 200 and master.text.startswith("#EXTM3U")
