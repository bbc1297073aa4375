"""Fixtures for the NATS transport tests: a unique stream/subject prefix per test (streams
removed after it), a PostgreSQL database, an in-process kernel, and NATS-mode worker
processes (tests/integration/nats/remote_worker_process.py) started without DATABASE_URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.migrate import run_migrations
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.remote import bus
from reelhouse.core.jobs.remote.kernel import KernelBridge
from reelhouse.core.jobs.remote.settings import NatsSettings
from tests.conftest import IN_CI, _postgres_dsn, create_postgres_database, drop_postgres_database

NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")
WORKER_SCRIPT = Path(__file__).with_name("remote_worker_process.py")


async def _nats_reachable(url: str) -> bool:
    import nats

    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
    except Exception:
        return False
    await nc.close()
    return True


async def require_nats() -> str:
    """NATS_URL if a server answers there; in CI its absence fails the test, elsewhere it skips."""
    if not await _nats_reachable(NATS_URL):
        if IN_CI:
            pytest.fail(f"NATS is required in CI and is not reachable at {NATS_URL}")
        pytest.skip(f"NATS not reachable at {NATS_URL}")
    return NATS_URL


@pytest.fixture
async def nats_url() -> str:
    return await require_nats()


@pytest.fixture
def nats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Environment of this test's kernel and workers: its own prefix, short timings."""
    env = {
        "NATS_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "NATS_ACK_WAIT": "1s",
        "NATS_WORKER_TTL": "3s",
        "NATS_DISPATCH_INTERVAL": "200ms",
        "LOCK_DIR": str(tmp_path / "locks"),
    }
    (tmp_path / "locks").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
async def pg_engine() -> AsyncIterator:
    name = await create_postgres_database()
    engine = create_engine(_postgres_dsn(name).replace("postgresql://", "postgresql+asyncpg://"))
    await run_migrations(engine)
    yield engine
    await engine.dispose()
    await drop_postgres_database(name)


def kernel_registry() -> TaskRegistry:
    """The kernel's view of the test kinds (handlers run only in the worker processes)."""

    async def never(_ctx):
        raise AssertionError("remote kinds run on NATS workers")

    registry = TaskRegistry()
    registry.register(TaskKind("nx.sleep", never, remote=True, max_attempts=3, backoff_base=0.2))
    return registry


class Kernel:
    def __init__(self, engine, url: str, registry: TaskRegistry | None = None, lease: float = 3.0) -> None:
        self.bridge = KernelBridge(
            engine,
            registry or kernel_registry(),
            url=url,
            settings=NatsSettings(),
            lease=timedelta(seconds=lease),
            stale_after=timedelta(seconds=4),
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Kernel:
        self.task = asyncio.create_task(self.bridge.run(self.stop))
        await asyncio.wait_for(self.bridge.connected.wait(), 30)
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def kernel_factory(nats_url: str, nats_env: dict[str, str]) -> AsyncIterator[Callable[..., Kernel]]:
    yield lambda engine, **kw: Kernel(engine, kw.pop("url", nats_url), **kw)
    await bus.delete_all(nats_url, nats_env["NATS_PREFIX"])


class Workers:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, worker_id: str, *, extra: str = "", url: str | None = None, script: Path = WORKER_SCRIPT, argv=()):
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_DSN")}
        env.update(self.env, NATS_URL=url or self.url, WORKER_ID=worker_id, WORKER_EXTRA_CAPABILITIES=extra)
        proc = subprocess.Popen(
            [sys.executable, str(script), *argv] if script.suffix == ".py" else [str(script), *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs[worker_id] = proc
        return proc

    def kill(self, worker_id: str) -> None:
        self.procs[worker_id].send_signal(signal.SIGKILL)
        self.procs[worker_id].wait(10)

    def stop(self, worker_id: str, timeout: float = 30) -> int:
        proc = self.procs[worker_id]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return proc.returncode

    def stop_all(self) -> list[str]:
        errors = []
        for worker_id, proc in self.procs.items():
            self.stop(worker_id)
            _out, err = proc.communicate()
            if "Traceback" in (err or "") and proc.returncode not in (-9,):
                errors.append(f"{worker_id}: {err[-3000:]}")
        return errors


@pytest.fixture
def workers(nats_url: str, nats_env: dict[str, str]):
    pool = Workers(nats_url, nats_env)
    yield pool
    for proc in pool.procs.values():
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                proc.kill()


async def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting: {message}")
