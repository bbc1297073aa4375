"""`reelhouse worker` in NATS mode and `reelhouse worker --drain`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from reelhouse.config import ConfigError, Settings
from reelhouse.core.jobs.remote import bus
from reelhouse.core.jobs.remote.settings import NatsSettings


def remote_worker_id() -> str:
    """WORKER_ID, else the hostname (WebEncode's default; database workers add the pid)."""
    return os.environ.get("WORKER_ID") or socket.gethostname()


def transport_of(settings: Settings) -> str:
    """`nats` when the worker takes tasks from NATS, `database` when it claims them from SQL."""
    nats_settings = settings.section(NatsSettings)
    chosen = nats_settings.worker_transport
    has_database = bool(settings.database.database_url)
    if chosen == "auto":
        chosen = "nats" if settings.jobs.nats_url and not has_database else "database"
    if chosen == "nats":
        if not settings.jobs.nats_url:
            raise ConfigError("WORKER_TRANSPORT=nats needs NATS_URL")
        if has_database:
            raise ConfigError(
                "WORKER_TRANSPORT=nats: unset DATABASE_URL (a NATS-mode worker holds no database credentials)"
            )
    return chosen


def no_database_engine() -> AsyncEngine:
    """An engine that refuses every connection: a NATS-mode worker builds the same runtime as
    any process (domains register their kinds), but nothing in it may reach a database."""

    async def refuse() -> NoReturn:
        raise RuntimeError("this worker runs in NATS mode and has no database")

    return create_async_engine("sqlite+aiosqlite://", async_creator=refuse, poolclass=NullPool)


def run_nats_worker(settings: Settings, concurrency: int | None) -> None:
    from reelhouse.core.jobs.remote.worker import RemoteWorker
    from reelhouse.core.media.hw import detect_capabilities
    from reelhouse.core.runtime import build_runtime
    from reelhouse.core.telemetry.tracing import flush_tracing, setup_tracing

    async def main() -> None:
        # Spans go to OTEL_EXPORTER_OTLP_ENDPOINT as in database mode; each run continues the
        # trace of its message's `traceparent` header.
        setup_tracing(settings.logging.otel_exporter_otlp_endpoint, settings.logging.otel_trace_sample_rate)
        runtime = build_runtime(settings, engine=no_database_engine())
        caps = await detect_capabilities(settings.media)
        gpu = list(caps.usable_backends)
        worker = RemoteWorker(
            runtime.registry,
            url=settings.jobs.nats_url,
            settings=settings.section(NatsSettings),
            worker_id=remote_worker_id(),
            capabilities=caps.capability_list(),
            concurrency=concurrency or settings.jobs.worker_concurrency,
            info={"gpu": gpu or None},
            shutdown_grace=settings.jobs.shutdown_grace.total_seconds(),
            progress_interval=settings.media.progress_save_interval,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        try:
            await worker.run()
        finally:
            await runtime.aclose()
            flush_tracing()

    asyncio.run(main())


async def drain_over_nats(settings: Settings, worker_id: str, wait: float) -> str:
    """Put the drain request in the control bucket and wait for the worker to say it drained
    (or for its registry entry to go). Returns the last status seen."""
    nats_settings = settings.section(NatsSettings)
    names = bus.Names(nats_settings.nats_prefix)
    nc = await bus.connect(settings.jobs.nats_url, f"reelhouse-drain-{worker_id}")
    try:
        js = nc.jetstream()
        control = await bus.control_kv(js, names)
        workers = await bus.workers_kv(js, names, nats_settings.worker_ttl.total_seconds())
        await control.put(f"drain.{bus.token(worker_id)}", b"1")
        deadline = time.monotonic() + wait
        status = "unknown"
        while time.monotonic() < deadline:
            try:
                entry = await workers.get(bus.token(worker_id))
                status = bus.decode(entry.value or b"{}").get("status", "unknown")
            except Exception:
                status = "gone"
            if status in ("drained", "stopped", "gone"):
                break
            await asyncio.sleep(0.5)
        return status
    finally:
        await nc.close()
