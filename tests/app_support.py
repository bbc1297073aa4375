"""Helpers the domains' integration suites share (encode and live so far): a free loopback
port, the app under uvicorn as `reelhouse serve` runs it, an in-loop worker, and subprocesses
that do not block the event loop the server under test runs in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from reelhouse.config import Settings
from reelhouse.core.db import migrate
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import Runtime, build_runtime


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings read from the environment with `env` set (and undone after the test)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@contextlib.asynccontextmanager
async def migrated_runtime(settings: Settings, **domains: Callable[[Runtime], Any]) -> AsyncIterator[Runtime]:
    """A runtime with just `domains` set up (each one's result kept as the attribute of its
    name: `runtime.encode`), migrated; its engine is disposed on exit."""
    runtime = build_runtime(settings, load_domains=False)
    for name, setup in domains.items():
        setattr(runtime, name, setup(runtime))
    await migrate.run_migrations(runtime.engine)
    try:
        yield runtime
    finally:
        await runtime.aclose()


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """`app` under uvicorn on 127.0.0.1:`port` (0: a free one), in this event loop; yields its
    base URL once it accepts requests, and waits for its shutdown (lifespan included)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        sock.close()


@contextlib.asynccontextmanager
async def running_worker(runtime: Runtime, name: str, kinds: Sequence[str], **options: Any) -> AsyncIterator[Worker]:
    """A worker for `kinds` on this event loop (fast polling), stopped on exit."""
    settings: dict[str, Any] = {"concurrency": 2, "poll_interval": 0.1, "cancel_poll_interval": 0.2,
                                "progress_interval": 0.2, "shutdown_grace": 2, **options}  # fmt: skip
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(worker_id=name, kinds=list(kinds), **settings))
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def run_tool(*argv: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """A subprocess that does not block the loop: the server under test runs in this loop."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def ffprobe_json(ffprobe: str, *args: str, timeout: float = 30) -> dict[str, Any]:
    """ffprobe's JSON answer; an AssertionError with its message when it fails."""
    code, stdout, stderr = await run_tool(ffprobe, "-v", "error", "-of", "json", *args, timeout=timeout)
    if code != 0:
        raise AssertionError(f"ffprobe failed: {stderr[-500:]}")
    return json.loads(stdout or "{}")
