"""Fixtures for the encode domain: a runtime with the encode domain set up and migrated, on
SQLite and PostgreSQL (the `db_url` fixture), on the filesystem or SeaweedFS S3 backend, an
in-loop worker, and a real uvicorn server on loopback for tools that speak HTTP (ffprobe, yt-dlp).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

_TESTS_DIR = Path(__file__).resolve().parents[2]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import media_fixtures  # noqa: E402
from reelhouse.app import create_app  # noqa: E402
from reelhouse.config import Settings  # noqa: E402
from reelhouse.core.db import migrate  # noqa: E402
from reelhouse.core.jobs import states  # noqa: E402
from reelhouse.core.jobs.worker import Worker  # noqa: E402
from reelhouse.core.runtime import Runtime  # noqa: E402
from reelhouse.core.security.users import create_api_token, create_user  # noqa: E402
from reelhouse.encode.pipeline import ENCODE_KINDS  # noqa: E402
from reelhouse.encode.plugin import EncodeDomain, setup  # noqa: E402
from tests.app_support import migrated_runtime, running_worker, serve_app, settings_from  # noqa: E402
from tests.seaweed import SeaweedS3  # noqa: E402

ADMIN_TOKEN = "encode-tests-admin-token-0123456789"
MASTER_KEY = "encode-tests-master-key-0123456789abcdef"
ENCODE_MIGRATIONS = str(Path(__file__).resolve().parents[3] / "src" / "reelhouse" / "encode" / "migrations")
JOB_TIMEOUT = 120.0


@pytest.fixture(autouse=True)
def encode_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the lead adds the `reelhouse.migrations` entry point, put the encode branch on
    Alembic's path by hand; once the entry point exists this adds nothing."""
    original = migrate.version_locations

    def with_encode() -> list[str]:
        locations = original()
        if not any(Path(loc).resolve() == Path(ENCODE_MIGRATIONS) for loc in locations):
            locations.append(ENCODE_MIGRATIONS)
        return locations

    monkeypatch.setattr(migrate, "version_locations", with_encode)


@pytest.fixture(scope="session", autouse=True)
def _require_media_tools() -> None:
    for tool in (media_fixtures.FFMPEG, media_fixtures.FFPROBE):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required for the encode tests (apt-get install ffmpeg)")


@pytest.fixture
def seaweed(seaweedfs: SeaweedS3) -> SeaweedS3:
    """The session's SeaweedFS (tests/seaweed.py)."""
    return seaweedfs


@pytest.fixture
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`fs` unless a test parametrizes it (indirect) with `s3`."""
    name = getattr(request, "param", "fs")
    bucket = None
    if name == "s3":
        server = request.getfixturevalue("seaweed")
        bucket = server.new_bucket()
        monkeypatch.setenv("STORAGE_BACKEND", "s3")
        monkeypatch.setenv("S3_ENDPOINT", server.endpoint)
        monkeypatch.setenv("S3_BUCKET", bucket)
        monkeypatch.setenv("S3_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("S3_SECRET_ACCESS_KEY", server.secret_key)
        monkeypatch.setenv("S3_MULTIPART_CHUNK_MB", "5")
    else:
        monkeypatch.setenv("STORAGE_BACKEND", "fs")
    yield name
    if bucket is not None:
        request.getfixturevalue("seaweed").drop_bucket(bucket)


@pytest.fixture
def settings(db_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "DATA_DIR": str(tmp_path / "data"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "MASTER_ENCRYPTION_KEY": MASTER_KEY,
        "HW_ACCEL": "none",
        "PROGRESS_SAVE_INTERVAL": "0.2",
        "JOB_POLL_INTERVAL": "0.1",
        "JOB_LEASE_SECONDS": "10",
        "WORKER_CONCURRENCY": "2",
        "WORKER_SHUTDOWN_GRACE": "2",
        "RATE_LIMIT_ENABLED": "false",
        # The fetch tests serve their sources from loopback, which the SSRF guard refuses by default.
        "OUTBOUND_ALLOW_PRIVATE": "true",
    }
    return settings_from(monkeypatch, env)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with migrated_runtime(settings, encode=setup) as runtime:
        yield runtime
        await runtime.encode.service.close_storage()  # type: ignore[attr-defined]


@pytest.fixture
def domain(runtime: Runtime) -> EncodeDomain:
    return runtime.encode  # type: ignore[attr-defined]


@pytest.fixture
async def client(runtime: Runtime, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process (no lifespan: start a worker with `encode_worker` when a test needs one)."""
    app = create_app(settings, runtime=runtime, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=admin_headers(), timeout=60
    ) as client:
        yield client


@pytest.fixture
async def encode_worker(runtime: Runtime) -> AsyncIterator[Worker]:
    async with running_worker(runtime, "encode-test-worker", ENCODE_KINDS) as worker:
        yield worker


@contextlib.asynccontextmanager
async def live_server(runtime: Runtime, settings: Settings) -> AsyncIterator[str]:
    """The whole app (API + embedded worker, as `reelhouse serve` runs it) under uvicorn on a
    free loopback port, in this event loop."""
    async with serve_app(create_app(settings, runtime=runtime, background=True)) as url:
        yield url


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def user_headers(runtime: Runtime, role: str) -> dict[str, str]:
    user_id = await create_user(runtime.engine, f"{role}-user", "correct horse battery staple", role)
    return {"Authorization": f"Bearer {await create_api_token(runtime.engine, user_id, 'tests')}"}


async def wait_for_job(
    client: httpx.AsyncClient, job_id: int, *, timeout: float = JOB_TIMEOUT, until: Any = None
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job is final (or `until(job)` holds); returns the view."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if until(job) if until else job["status"] in states.JOB_FINAL:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        await asyncio.sleep(0.1)


async def storage_keys(domain: EncodeDomain, prefix: str) -> list[str]:
    keys = []
    async with contextlib.aclosing(domain.service.storage().list(prefix.rstrip("/") + "/")) as listing:
        async for info in listing:
            keys.append(info.key)
    return sorted(keys)


def scratch_leftovers(domain: EncodeDomain, settings: Settings) -> list[str]:
    root = domain.service.settings.scratch_dir(settings.server.data_dir)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encode-clips")


@pytest.fixture(scope="session")
def clip_1080p(clip_dir: Path) -> Path:
    """The acceptance clip: 20 s of 1080p30 with a stereo tone, generated once per session."""
    return media_fixtures.make_clip(clip_dir / "1080p.mp4", width=1920, height=1080, duration=20.0, fps=30)


@pytest.fixture(scope="session")
def clip_480p(clip_dir: Path) -> Path:
    return media_fixtures.make_clip(clip_dir / "480p.mp4", width=854, height=480, duration=3.0, fps=25)


async def run_tool(*argv: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """A subprocess that does not block the loop: the server under test runs in this loop."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def ytdlp_download(url: str, folder: Path, timeout: float = 120) -> None:
    """yt-dlp (the project's dependency, as a user would run it) saves `url` as `folder/master.*`."""
    code, _out, err = await run_tool(
        sys.executable, "-m", "yt_dlp", "--ignore-config", "-q", "-f", "best", "-P", str(folder),
        "-o", "master.%(ext)s", url, timeout=timeout,
    )  # fmt: skip
    assert code == 0, err


async def packets(target: str, stream: str, *extra: str) -> list[dict]:
    # In a subprocess of this loop: the server under test answers from the same loop.
    code, out, err = await run_tool(
        media_fixtures.FFPROBE,
        "-v",
        "error",
        *extra,
        "-select_streams",
        stream,
        "-show_entries",
        "packet=pts_time,flags",
        "-of",
        "json",
        target,
    )
    assert code == 0, err
    return json.loads(out)["packets"]


async def check_gapless(target: str, *extra: str, duration: float, fps: float) -> list[float]:
    """Every frame of a `duration`-second source at `fps`, none doubled, no gap over one frame;
    audio over the same span. Returns the keyframe times (relative to the first frame)."""
    video = await packets(target, "v:0", *extra)
    pts = sorted(float(p["pts_time"]) for p in video)
    assert len(pts) == round(duration * fps), (target, len(pts))
    steps = [b - a for a, b in itertools.pairwise(pts)]
    assert max(steps) <= 1 / fps + 1e-3 and min(steps) >= 1 / fps - 1e-3, (target, max(steps), min(steps))
    audio = sorted(float(p["pts_time"]) for p in await packets(target, "a:0", *extra))
    assert audio[-1] - audio[0] == pytest.approx(duration, abs=0.1)
    assert abs(audio[0] - pts[0]) < 0.05  # in sync at the start
    return [round(float(p["pts_time"]) - pts[0], 3) for p in video if "K" in p["flags"]]


@contextlib.asynccontextmanager
async def worker_processes(
    workers: dict[str, dict[str, str]], logs: Path
) -> AsyncIterator[dict[str, asyncio.subprocess.Process]]:
    """`reelhouse worker` processes, one per id with its environment (database mode or NATS
    mode): separate interpreters, nothing shared but the database or NATS, and storage. Each
    logs to `logs/<id>.log`."""
    procs: dict[str, asyncio.subprocess.Process] = {}
    logs.mkdir(parents=True, exist_ok=True)
    for worker_id, env in workers.items():
        with (logs / f"{worker_id}.log").open("wb") as log:
            procs[worker_id] = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "reelhouse"),
                "worker",
                env={**env, "WORKER_ID": worker_id},
                stdout=log,
                stderr=log,
            )
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def wait_for_workers(engine, count: int, timeout: float = 60) -> None:
    from reelhouse.core.db.models import workers

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(workers.c.id).where(workers.c.status == "running"))).all()
        if len(rows) >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"only {len(rows)} workers registered"
        await asyncio.sleep(0.2)
