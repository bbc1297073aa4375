"""The archive's composition root: called by core through the `reelhouse.domains` entry point.

Builds the settings sections, stores, provider clients and the `ArchiveServices` object once
per runtime, binds every task handler to them, and registers tasks, periodic tasks, routes,
`/status` fields, metric refreshers and the chat recorder. Nothing in the archive looks its
services up anywhere else: handlers receive them, routes get them through `component()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from reelhouse.archive import models  # noqa: F401 - registers the archive tables on the metadata
from reelhouse.archive.chat.reconcile import reconcile_task
from reelhouse.archive.chat.service import ChatService, run_chat_service
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.errors import as_task_errors
from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.live.settings import LiveSettings
from reelhouse.archive.live.task import live_record_task, live_trigger
from reelhouse.archive.live.watch import run_live_watch
from reelhouse.archive.services import ArchiveServices, VodFiles, YouTubeUploads
from reelhouse.archive.settings import ArchiveSettings, OAuthFlowSettings
from reelhouse.archive.status import ArchiveStatus
from reelhouse.archive.store import ChannelStore, VodStore
from reelhouse.archive.tasks.download import download_task
from reelhouse.archive.tasks.periodic import catalog_task, discover_task, retention_task
from reelhouse.archive.tasks.upload import upload_task
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.twitch.helix import HelixClient
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.scheduler import PeriodicTask
from reelhouse.core.runtime import Runtime
from reelhouse.core.storage import open_storage

# vod-tender's safe keys (reference §1 #8) that live in the archive's settings, in its order.
OVERRIDABLE = (
    "VOD_PROCESS_INTERVAL",
    "PROCESSING_RETRY_COOLDOWN",
    "DOWNLOAD_MAX_ATTEMPTS",
    "DOWNLOAD_BACKOFF_BASE",
    "UPLOAD_MAX_ATTEMPTS",
    "UPLOAD_BACKOFF_BASE",
    "RETAIN_KEEP_NEWER_THAN_DAYS",
    "RETENTION_KEEP_DAYS",
    "RETENTION_KEEP_COUNT",
    "RETENTION_DRY_RUN",
    "RETENTION_INTERVAL",
    "BACKFILL_UPLOAD_DAILY_LIMIT",
)
Handler = Callable[[ArchiveServices, TaskContext], Awaitable[Any]]


@dataclass(frozen=True)
class ArchiveDomain:
    services: ArchiveServices
    status: ArchiveStatus


def build_services(runtime: Runtime, settings: ArchiveSettings, chat_settings: ChatSettings) -> ArchiveServices:
    engine = runtime.engine
    tokens = TokenStore.from_settings(engine, runtime.settings)
    vod_store, channel_store = VodStore(engine), ChannelStore(engine)
    helix = None
    if settings.twitch_client_id and settings.twitch_client_secret:
        helix = HelixClient(
            settings.twitch_client_id,
            settings.twitch_client_secret,
            api_base=settings.twitch_api_base,
            auth_base=settings.twitch_auth_base,
        )
    services = ArchiveServices(
        settings=settings,
        oauth=runtime.settings.section(OAuthFlowSettings),
        chat_settings=chat_settings,
        media=runtime.settings.media,
        overrides=runtime.overrides,
        vods=vod_store,
        channels=channel_store,
        kv=KV(engine),
        queue=TaskQueue(engine),
        breaker=runtime.breaker,
        files=VodFiles(runtime.settings.server.data_dir),
        tokens=tokens,
        youtube=YouTubeUploads(settings, tokens),
        helix=helix,
        transcode=_transcoder(runtime),
        live_settings=runtime.settings.section(LiveSettings),
        storage_factory=lambda: open_storage(runtime.settings),
    )
    services.chat = ChatService(engine, chat_settings, settings, tokens, services.watched_channels, helix=helix)
    services.chat.on_live = live_trigger(services)
    return services


def _transcoder(runtime: Runtime) -> Callable[[Path, Path, str], Awaitable[Any]]:
    async def transcode(source: Path, target: Path, profile_name: str) -> Any:
        from reelhouse.core.media import builtin_profile, encode_mp4

        return await encode_mp4(source, target, builtin_profile(profile_name), settings=runtime.settings.media)

    return transcode


def bind(handler: Handler, services: ArchiveServices) -> Callable[[TaskContext], Awaitable[Any]]:
    """The engine's handler for `handler`: receives the services; provider errors mapped."""
    mapped = as_task_errors(handler)

    async def run(ctx: TaskContext) -> Any:
        return await mapped(services, ctx)

    run.__name__ = handler.__name__
    return run


def register_tasks(runtime: Runtime, services: ArchiveServices) -> None:
    settings, chat_settings = services.settings, services.chat_settings
    cooldown = settings.processing_retry_cooldown.total_seconds()
    timeout = settings.download_timeout.total_seconds()
    kinds = [
        TaskKind(
            ArchiveTask.DOWNLOAD,
            bind(download_task, services),
            max_attempts=settings.download_max_attempts,
            backoff_base=settings.download_backoff_base.total_seconds(),
            backoff_cap=max(cooldown, 1.0),
            # The handler enforces DOWNLOAD_TIMEOUT itself (to record why); this is the backstop.
            timeout=timeout + 120 if timeout else None,
            concurrency_global=settings.max_concurrent_downloads,
        ),
        TaskKind(
            ArchiveTask.UPLOAD,
            bind(upload_task, services),
            max_attempts=settings.upload_max_attempts,
            backoff_base=settings.upload_backoff_base.total_seconds(),
            backoff_cap=max(cooldown, 1.0),
        ),
        TaskKind(ArchiveTask.DISCOVER, bind(discover_task, services), max_attempts=3, backoff_base=5.0),
        TaskKind(
            ArchiveTask.CATALOG, bind(catalog_task, services), max_attempts=3, backoff_base=30.0, concurrency_global=1
        ),
        TaskKind(ArchiveTask.RETENTION, bind(retention_task, services), max_attempts=2, concurrency_global=1),
        TaskKind(
            ArchiveTask.CHAT_RECONCILE,
            bind(reconcile_task, services),
            # The handler ends the retries itself once CHAT_RECONCILE_WINDOW has passed.
            max_attempts=1_000_000,
            backoff_base=chat_settings.reconcile_retry.total_seconds(),
            backoff_cap=max(chat_settings.reconcile_retry_max, chat_settings.reconcile_retry).total_seconds(),
            timeout=timedelta(minutes=10).total_seconds(),
        ),
        TaskKind(
            ArchiveTask.LIVE_RECORD,
            bind(live_record_task, services),
            max_attempts=services.live_settings.max_attempts,
            backoff_base=1.0,
            backoff_cap=15.0,  # a stream goes on meanwhile: retry soon
            priority=100,
        ),
    ]
    for kind in kinds:
        runtime.registry.register(kind)
    tick = min(settings.vod_process_interval, timedelta(seconds=30))
    runtime.periodic.extend(
        [
            PeriodicTask("archive.discover", ArchiveTask.DISCOVER, every=tick),
            PeriodicTask("archive.catalog", ArchiveTask.CATALOG, every=settings.vod_catalog_backfill_interval),
            PeriodicTask(
                "archive.retention", ArchiveTask.RETENTION, every=min(settings.retention_interval, timedelta(minutes=5))
            ),
        ]
    )


def install_http(runtime: Runtime) -> None:
    """The archive's API routers and browser pages (only when an app is built)."""
    from reelhouse.archive.http import admin, channels, chat, oauth, vods
    from reelhouse.archive.pages import archive_pages

    runtime.routers.extend(module.router for module in (vods, chat, channels, admin, oauth))
    runtime.add_pages(archive_pages())


def setup(
    runtime: Runtime, settings: ArchiveSettings | None = None, chat_settings: ChatSettings | None = None
) -> ArchiveDomain:
    """Register the archive on `runtime`. Explicit settings (tests) win over the environment's;
    a bad variable stops start-up here with its name."""
    if settings is not None:
        runtime.settings.use_section(settings)
    if chat_settings is not None:
        runtime.settings.use_section(chat_settings)
    archive_settings = runtime.settings.section(ArchiveSettings)
    chat = runtime.settings.section(ChatSettings)
    services = build_services(runtime, archive_settings, chat)
    runtime.provide(services)
    runtime.overrides.register(archive_settings, OVERRIDABLE)
    register_tasks(runtime, services)
    status = ArchiveStatus(services)
    runtime.http_installers.append(install_http)
    runtime.status_providers.append(status.status)
    runtime.status_providers.append(_chat_status(services))
    runtime.status_providers.append(_live_status(services))
    runtime.status_providers.append(status.monitor)  # vod-tender's /admin/monitor fields, in /status too
    runtime.metric_refreshers.append(status.refresh_gauges)
    runtime.metric_refreshers.append(_live_gauges(services))
    runtime.closers.append(services.aclose)
    if chat.enabled and services.chat is not None:
        chat_service = services.chat

        async def record_chat(_runtime: Runtime, stop: asyncio.Event) -> None:
            await run_chat_service(chat_service, stop)

        runtime.services.append(record_chat)
    if not chat.auto_start and services.helix is not None:
        # Chat auto mode sees channels go live and starts their live recording; without it the
        # live watch does (only for channels that record live).

        async def watch_live(_runtime: Runtime, stop: asyncio.Event) -> None:
            await run_live_watch(services, stop)

        runtime.services.append(watch_live)
    runtime.notes.extend(f"archive: {problem}" for problem in status.missing_configuration())
    return ArchiveDomain(services, status)


def _chat_status(services: ArchiveServices) -> Callable[[Runtime], Awaitable[dict[str, Any]]]:
    async def chat_status(_runtime: Runtime) -> dict[str, Any]:
        return {"chat": services.chat.status() if services.chat is not None else {"mode": "off"}}

    return chat_status


def _live_status(services: ArchiveServices) -> Callable[[Runtime], Awaitable[dict[str, Any]]]:
    async def live_status(_runtime: Runtime) -> dict[str, Any]:
        from reelhouse.archive.store.live import LiveState

        rows = await services.live.list(limit=20)
        active = [r for r in rows if r.state in (LiveState.RECORDING, LiveState.ENDED)]
        return {
            "live_recording": {
                "active": [
                    {
                        "channel": r.channel,
                        "placeholder": r.placeholder,
                        "state": r.state,
                        "segments": r.segments,
                        "seconds": round(r.recorded_seconds, 1),
                        "ads_skipped": r.ad_segments,
                        "lost_segments": r.lost_segments,
                    }
                    for r in active
                ]
            }
        }

    return live_status


def _live_gauges(services: ArchiveServices) -> Callable[[Runtime], Awaitable[None]]:
    async def refresh(_runtime: Runtime) -> None:
        from reelhouse.archive.live.metrics import RECORDING
        from reelhouse.archive.store.live import LiveState

        states = await services.live.count_by_state()
        RECORDING.set(states.get(LiveState.RECORDING, 0) + states.get(LiveState.ENDED, 0))

    return refresh
