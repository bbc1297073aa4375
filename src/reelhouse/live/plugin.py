"""Live domain registration (the `reelhouse.domains` entry point).

Everything but the ingest is always registered (routes, task kinds: a worker can run live
transcodes whether or not this host runs nginx). The ingest (nginx + RTMP module) and the
monitor run in `reelhouse serve` when LIVE_ENABLED is true, or `auto` and nginx is installed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial

from reelhouse.config import ConfigError
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.audit import master_keys_of
from reelhouse.core.security.keys import MasterKeys
from reelhouse.live import (
    kinds,
    models,  # noqa: F401 - registers the live tables on the metadata
)
from reelhouse.live.ingest import IngestServer, nginx_available
from reelhouse.live.metrics import live_status, refresh_metrics
from reelhouse.live.monitor import MonitorState, run_monitor
from reelhouse.live.services import LiveServices
from reelhouse.live.settings import LiveSettings
from reelhouse.live.store import LiveStore
from reelhouse.live.tasks.finalize import finalize
from reelhouse.live.tasks.restream import restream, restream_file
from reelhouse.live.tasks.transcode import transcode

log = logging.getLogger("reelhouse.live")


@dataclass(frozen=True)
class LiveDomain:
    services: LiveServices
    ingest_enabled: bool
    monitor: MonitorState

    def ingest_server(self) -> IngestServer:
        return build_ingest(self.services)


def callback_base(services: LiveServices) -> str:
    if services.settings.callback_url:
        return services.settings.callback_url
    host, port = services.runtime_settings.server.bind
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{port}"


def build_ingest(services: LiveServices) -> IngestServer:
    prefix = services.settings.nginx_prefix(services.runtime_settings.server.data_dir)
    return IngestServer(services.settings, prefix, callback_base(services), services.callback_token)


def install_http(runtime: Runtime, *, services: LiveServices) -> None:
    """The live API routers and browser pages (only when an app is built)."""
    from reelhouse.live.http import ingest, playback, restreams, streams
    from reelhouse.live.pages import build_pages

    runtime.routers.extend(module.router for module in (streams, playback, ingest, restreams))
    runtime.add_pages(build_pages(services))


def setup(runtime: Runtime) -> LiveDomain:
    settings = runtime.settings.section(LiveSettings)
    keys = master_keys_of(runtime.engine) or MasterKeys.from_settings(runtime.settings)
    services = LiveServices(
        runtime_settings=runtime.settings,
        settings=settings,
        store=LiveStore(runtime.engine),
        keys=keys,
    )
    registry = runtime.registry
    registry.register(TaskKind(kinds.KIND_TRANSCODE, partial(transcode, services), max_attempts=30,
                               backoff_base=1.0, backoff_cap=10.0, priority=10,
                               required_capability=kinds.TRANSCODE_CAPABILITY))  # fmt: skip
    registry.register(TaskKind(kinds.KIND_RESTREAM, partial(restream, services), max_attempts=30,
                               backoff_base=1.0, backoff_cap=10.0, priority=10))  # fmt: skip
    registry.register(TaskKind(kinds.KIND_FINALIZE, partial(finalize, services), max_attempts=5, timeout=3600))
    registry.register(TaskKind(kinds.KIND_RESTREAM_FILE, partial(restream_file, services), max_attempts=5))
    runtime.http_installers.append(partial(install_http, services=services))
    runtime.status_providers.append(live_status)
    runtime.metric_refreshers.append(refresh_metrics)
    runtime.provide(services)

    missing = nginx_available(settings) if settings.live_enabled != "false" else "LIVE_ENABLED=false"
    if missing and settings.live_enabled == "true":
        raise ConfigError(f"the live ingest is enabled (LIVE_ENABLED=true) but {missing}")
    enabled = missing is None
    if not enabled and settings.live_enabled == "auto":
        runtime.notes.append(f"live ingest off: {missing}")

    monitor_state = MonitorState()

    async def run_ingest(_runtime: Runtime, stop: asyncio.Event) -> None:
        monitor = asyncio.create_task(run_monitor(services, stop, monitor_state))
        try:
            await build_ingest(services).supervise(stop)
        finally:
            await monitor

    if enabled:
        runtime.services.append(run_ingest)
    runtime.closers.append(services.aclose)
    return LiveDomain(services, enabled, monitor_state)
