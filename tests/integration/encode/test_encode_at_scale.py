"""Encode at scale (issue 15's acceptance): a ladder split into pieces over NATS-mode workers
(no database credentials, S3 storage) and database-mode workers, each a `reelhouse worker`
process, with the kernel (`serve`'s NATS side and embedded worker, under uvicorn) in this
process.

Every test here runs on a PostgreSQL cluster of its own (tests/pg_cluster.py): one restarts it
under a running job, and the shared server on 5432 is never restarted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

import media_fixtures
from reelhouse.core.db.models import task_attempts, tasks, workers
from reelhouse.core.jobs import states
from reelhouse.core.jobs.remote import bus
from reelhouse.encode import assets as asset_store
from reelhouse.encode.pipeline import KIND_SEGMENT, KIND_STITCH
from tests.integration.encode.conftest import (
    ADMIN_TOKEN,
    admin_headers,
    check_gapless,
    live_server,
    worker_processes,
    ytdlp_download,
)
from tests.integration.nats.conftest import NATS_URL, require_nats
from tests.pg_cluster import PrivatePostgres

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("backend", ["s3"], indirect=True),
]

FPS = 25
DURATION = 120.0
# A small ladder on a small source: the test is about distribution and stitching, not pixels.
LADDER = {
    "name": "scale-pair",
    "kind": "hls",
    "segment_seconds": 4,
    "renditions": [
        {
            "name": "180p",
            "width": 320,
            "height": 180,
            "video_bitrate": "250k",
            "audio_bitrate": "64k",
            "preset": "veryfast",
        },
        {
            "name": "108p",
            "width": 192,
            "height": 108,
            "video_bitrate": "100k",
            "audio_bitrate": "48k",
            "preset": "veryfast",
        },
    ],
}


@pytest.fixture(scope="session")
def clip_2min(clip_dir: Path) -> Path:
    """Two minutes of 320x180 at 25 fps, a keyframe every second, with a tone (seconds to make)."""
    return media_fixtures.make_clip(clip_dir / "2min.mp4", width=320, height=180, duration=DURATION, fps=FPS)


@pytest.fixture
def db_url(private_postgres: PrivatePostgres) -> str:
    """The encode fixtures' database (`settings`, `runtime` migrate it) on the private cluster."""
    private_postgres.create_database("reelhouse")
    return private_postgres.dsn("reelhouse", "postgresql+asyncpg")


@pytest.fixture(autouse=True)
async def nats_prefix(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """NATS for the kernel and the NATS-mode workers, under a prefix of this test's own (set
    before `settings` reads the environment); its streams and buckets are removed after it."""
    await require_nats()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    for name, value in {
        "NATS_URL": NATS_URL,
        "NATS_PREFIX": prefix,
        "NATS_WORKER_TTL": "3s",
        "NATS_DISPATCH_INTERVAL": "200ms",
    }.items():
        monkeypatch.setenv(name, value)
    yield prefix
    await bus.delete_all(NATS_URL, prefix)


def nats_worker_env(tmp_path: Path, name: str) -> dict[str, str]:
    """A NATS-mode worker's environment: no database credentials (nor the admin token)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_DSN", "ADMIN_TOKEN")}
    return {**env, "DATA_DIR": str(tmp_path / name), "WORKER_CONCURRENCY": "1"}


def database_worker_env(tmp_path: Path, name: str) -> dict[str, str]:
    """A database-mode worker's environment: it claims from SQL and knows nothing of NATS."""
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    return {**env, "DATA_DIR": str(tmp_path / name), "WORKER_CONCURRENCY": "1"}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, message: str) -> Any:
    """Poll `check` until it returns something truthy. An error counts as "not yet": these
    checks read the database, which is down while it restarts."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = await check()
        except Exception as exc:
            last, found = exc, None
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting: {message} (last error: {last!r})")


async def job_tasks(engine, job_id: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.id))).mappings()
        return [dict(row) for row in rows]


async def registered(engine, ids: set[str]) -> bool:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(workers.c.id).where(workers.c.status == "running"))).scalars().all()
    return ids <= set(rows)


async def final_job(client: httpx.AsyncClient, job_id: int, timeout: float) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        response = await client.get(f"/v1/jobs/{job_id}")
        job = response.json() if response.status_code == 200 else {}
        return job if job.get("status") in states.JOB_FINAL else None

    job: dict[str, Any] = await eventually(done, timeout, f"job {job_id} ends")
    return job


def worker_logs(tmp_path: Path) -> dict[str, str]:
    return {p.stem: p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log")}


async def start_ladder_job(client: httpx.AsyncClient, domain) -> int:
    assert (await client.post("/v1/profiles", json=LADDER)).status_code == 201
    created = await client.post("/v1/jobs", json={"source_key": "inputs/2min.mp4", "profile": LADDER["name"]})
    assert created.status_code == 201, created.text
    return int(created.json()["job_id"])


async def test_restarting_postgresql_mid_job_workers_and_kernel_reconnect(
    runtime, settings, domain, private_postgres, clip_2min, tmp_path, caplog
):
    """PostgreSQL stopped `fast` (clients disconnected), then crashed (`immediate`), each time
    while pieces are being encoded on a NATS-mode worker and a database-mode worker. Nobody is
    restarted: the kernel, the embedded worker and both worker processes carry on, the job
    completes, and no piece is lost or run a second time."""
    caplog.set_level(logging.WARNING, logger="reelhouse")
    engine = runtime.engine
    await domain.service.storage().put("inputs/2min.mp4", clip_2min)
    fleet = {"pg-nats": nats_worker_env(tmp_path, "nats-data"), "pg-db": database_worker_env(tmp_path, "db-data")}
    restarts: list[tuple[str, set[int]]] = []
    async with (
        live_server(runtime, settings) as base,
        worker_processes(fleet, tmp_path / "logs") as procs,
        httpx.AsyncClient(base_url=base, headers=admin_headers(), timeout=30) as client,
    ):
        await eventually(lambda: registered(engine, set(fleet)), 60, "both workers are registered")
        job_id = await start_ladder_job(client, domain)

        async def running_pieces(not_in: set[int]) -> set[int]:
            return {
                t["id"]
                for t in await job_tasks(engine, job_id)
                if t["kind"] == KIND_SEGMENT and t["status"] == states.RUNNING and t["id"] not in not_in
            }

        for mode in ("fast", "immediate"):
            seen = set().union(*(ids for _m, ids in restarts))
            # A piece the previous restart did not already interrupt is being encoded right now.
            hit = await eventually(
                functools.partial(running_pieces, seen), 120, f"a new piece runs before the {mode} restart"
            )
            await asyncio.to_thread(private_postgres.restart, mode)
            restarts.append((mode, hit))

        job = await final_job(client, job_id, 240)
        rows = await job_tasks(engine, job_id)
        async with engine.connect() as conn:
            lost = (
                await conn.execute(select(task_attempts).where(task_attempts.c.task_id.in_([t["id"] for t in rows])))
            ).mappings()
            history = [dict(r) for r in lost]
        alive = {worker_id: proc.returncode for worker_id, proc in procs.items()}
        asset = await asset_store.get_asset(engine, job_id=job_id)
        rung = asset["renditions"][0] if asset else None
        if rung is not None:
            await check_gapless(
                base + rung["url"], "-headers", f"Authorization: Bearer {ADMIN_TOKEN}\r\n", duration=DURATION, fps=FPS
            )
    logs = worker_logs(tmp_path)
    assert job["status"] == "completed", (job, {k: v[-3000:] for k, v in logs.items()})
    assert alive == {"pg-nats": None, "pg-db": None}, "a worker process died with the database"
    assert [p.returncode for p in procs.values()] == [0, 0], logs  # and each stopped cleanly on SIGTERM
    pieces = [t for t in rows if t["kind"] == KIND_SEGMENT]
    assert len(pieces) >= 8 and all(t["status"] == states.SUCCEEDED for t in pieces)
    assert {mode for mode, hit in restarts if hit} == {"fast", "immediate"}
    # Every piece (those running while the database went away included) was claimed once and
    # ran once: no lease lapsed, no run was stopped as lost, nothing was redelivered and rerun.
    rerun = [
        {k: t[k] for k in ("id", "kind", "fence", "attempts", "lease_owner", "last_error", "error_class")}
        for t in rows
        if t["fence"] != 1
    ]
    assert rerun == [] and history == [], (rerun, history, restarts)
    assert {t["result"]["worker"] for t in pieces} == {"pg-nats", "pg-db"}
    # The outage was seen (and survived) rather than missed: the kernel's loops logged it.
    kernel_warnings = [r.getMessage() for r in caplog.records if r.name == "reelhouse.kernel.nats"]
    assert any("failed" in line for line in kernel_warnings), kernel_warnings
    assert " failed" in logs["pg-db"], logs["pg-db"][-3000:]  # and so did the database worker
    assert asset is not None and asset["status"] == "ready"


async def test_ladder_on_a_two_minute_clip_runs_segment_parallel_on_three_worker_processes(
    runtime, settings, domain, clip_2min, tmp_path
):
    """The combined acceptance: NATS, three `reelhouse worker` processes (two in NATS mode
    without database credentials, one claiming from the database), S3 storage; a ladder on a
    two-minute clip is split over both transports, and the stitched HLS plays over HTTP (ffprobe:
    every rung for the whole duration, no gap over one frame) and downloads with yt-dlp."""
    engine = runtime.engine
    await domain.service.storage().put("inputs/2min.mp4", clip_2min)
    fleet = {
        "scale-nats-1": nats_worker_env(tmp_path, "nats-1"),
        "scale-nats-2": nats_worker_env(tmp_path, "nats-2"),
        "scale-db": database_worker_env(tmp_path, "db"),
    }
    async with (
        live_server(runtime, settings) as base,
        worker_processes(fleet, tmp_path / "logs") as procs,
        httpx.AsyncClient(base_url=base, headers=admin_headers(), timeout=30) as client,
    ):
        await eventually(lambda: registered(engine, set(fleet)), 60, "the three workers are registered")
        async with engine.connect() as conn:
            transports = dict((await conn.execute(select(workers.c.id, workers.c.transport))).all())
        job_id = await start_ladder_job(client, domain)
        job = await final_job(client, job_id, 240)
        logs = worker_logs(tmp_path)
        assert job["status"] == "completed", (job, {k: v[-3000:] for k, v in logs.items()})
        rows = await job_tasks(engine, job_id)
        asset = await asset_store.get_asset(engine, job_id=job_id)
        assert asset is not None and asset["status"] == "ready"
        assert [r["name"] for r in asset["renditions"]] == ["180p", "108p"]
        auth = ["-headers", f"Authorization: Bearer {ADMIN_TOKEN}\r\n"]
        for rendition in asset["renditions"]:
            await check_gapless(base + rendition["url"], *auth, duration=DURATION, fps=FPS)
        link = (await client.get(f"/v1/assets/{asset['id']}/link")).json()
        out = tmp_path / "dl"
        await ytdlp_download(base + link["url"], out, timeout=180)
    assert [p.returncode for p in procs.values()] == [0, 0, 0], worker_logs(tmp_path)
    assert {k: transports[k] for k in fleet} == {"scale-nats-1": "nats", "scale-nats-2": "nats", "scale-db": "database"}
    pieces = [t for t in rows if t["kind"] == KIND_SEGMENT]
    # Three idle workers: pieces for each (ENCODE_SEGMENTS_PER_WORKER), every rung of each.
    assert len({t["result"]["piece"] for t in pieces}) >= 3 and len(pieces) == 2 * len(
        {t["result"]["piece"] for t in pieces}
    )
    assert len([t for t in rows if t["kind"] == KIND_STITCH]) == 1
    ran = {worker_id: sum(1 for t in pieces if t["result"]["worker"] == worker_id) for worker_id in fleet}
    idle = {worker_id: logs.get(worker_id, "")[-3000:] for worker_id, count in ran.items() if count == 0}
    # Every process encoded pieces: the NATS workers are nudged when pieces are dispatched and
    # take them without a lingering fetch, so a database worker claiming directly does not get
    # there first every time (it used to take 10 of the 12).
    assert all(count >= 1 for count in ran.values()), (ran, idle)
    (downloaded,) = list(out.iterdir())
    await check_gapless(str(downloaded), duration=DURATION, fps=FPS)
