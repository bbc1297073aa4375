"""An encode job whose transcode runs on `reelhouse worker` processes in NATS mode: no
DATABASE_URL in their environment, sources and outputs on S3 (SeaweedFS), the kernel (the
database side) in this process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from reelhouse.core.db.models import workers
from reelhouse.core.jobs.remote import bus
from reelhouse.core.jobs.remote.kernel import KernelBridge
from reelhouse.core.jobs.remote.settings import NatsSettings
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.encode.pipeline import KIND_FETCH, KIND_PROBE
from tests.integration.encode.conftest import wait_for_job
from tests.integration.nats.conftest import NATS_URL, require_nats, wait_until


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("backend", ["s3"], indirect=True)
async def test_transcode_runs_on_nats_workers_without_database_credentials(
    client, runtime, domain, clip_480p, monkeypatch, tmp_path
):
    await require_nats()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("NATS_PREFIX", prefix)
    monkeypatch.setenv("NATS_WORKER_TTL", "3s")
    monkeypatch.setenv("NATS_DISPATCH_INTERVAL", "200ms")
    stop = asyncio.Event()
    kernel = KernelBridge(
        runtime.engine,
        runtime.registry,
        url=NATS_URL,
        settings=NatsSettings(),
        lease=timedelta(seconds=10),
        stale_after=timedelta(seconds=6),
    )
    kernel_task = asyncio.create_task(kernel.run(stop))
    # The database side's own worker runs what needs the database (fetch, probe), never the transcode.
    local = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(worker_id="kernel-local", poll_interval=0.1, kinds=[KIND_FETCH, KIND_PROBE], shutdown_grace=2),
    )
    local_task = asyncio.create_task(local.run())
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_DSN", "ADMIN_TOKEN")}
    env.update(NATS_URL=NATS_URL, DATA_DIR=str(tmp_path / "worker-data"), WORKER_CONCURRENCY="1")
    # Output to files, not pipes: nobody reads a pipe until the end, and a worker that fills one
    # blocks on its next log line.
    logs = [tmp_path / f"enc-{n}.log" for n in (1, 2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reelhouse.cli", "worker"],
            env={**env, "WORKER_ID": f"enc-{n}"},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for n, log in zip((1, 2), logs, strict=True)
    ]
    try:

        async def both_registered() -> bool:
            assert all(proc.poll() is None for proc in procs), "a NATS worker exited at start-up"
            async with runtime.engine.connect() as conn:
                found = await conn.execute(select(workers.c.id).where(workers.c.transport == "nats"))
                return set(found.scalars()) == {"enc-1", "enc-2"}

        # Both workers are up before the job, as an operator would start them: under load the
        # second's start-up could otherwise outlast a job the first one runs alone.
        await wait_until(both_registered, 60, "both NATS workers registered")
        await domain.service.storage().put("inputs/480p.mp4", clip_480p)
        created = await client.post("/v1/jobs", json={"source_key": "inputs/480p.mp4", "preset": "ultrafast"})
        assert created.status_code == 201, created.text
        job = await wait_for_job(client, created.json()["job_id"], timeout=180)
        assert job["status"] == "completed", job
        asset = (await client.get(f"/v1/jobs/{job['id']}/outputs")).json()
        assert asset["status"] == "ready" and asset["renditions"]
        playlist = await client.get(asset["renditions"][0]["url"])
        assert playlist.status_code == 200 and "#EXTINF" in playlist.text
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(select(workers).where(workers.c.transport == "nats"))).mappings().all()
        assert {r["id"] for r in rows} == {"enc-1", "enc-2"}
        assert all("libx264" in r["capabilities"] and r["version"] for r in rows)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errors = []
        for proc, log in zip(procs, logs, strict=True):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode != 0:
                errors.append(log.read_text(errors="replace")[-3000:])
        local.request_stop()
        stop.set()
        await asyncio.wait_for(asyncio.gather(local_task, kernel_task), 30)
        await bus.delete_all(NATS_URL, prefix)
    assert errors == []
