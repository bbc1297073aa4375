"""The archive's fields in `/status` and `/admin/monitor` (vod-tender's names), and the gauges
refreshed before a `/metrics` scrape. All read the `vods` table and the task queue, so every
API node reports the same numbers."""

from __future__ import annotations

from typing import Any

from reelhouse.archive import metrics
from reelhouse.archive.http.schemas import rfc3339
from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store.stamps import latest_stamps
from reelhouse.config import format_duration
from reelhouse.core.runtime import Runtime

JOB_TIMESTAMP_KEYS = ("job_vod_process_last", "job_vod_discovery_last", "job_vod_backfill_last", "job_vod_catalog_last")
AVERAGE_KEYS = ("avg_download_ms", "avg_upload_ms", "avg_total_ms")


class ArchiveStatus:
    def __init__(self, services: ArchiveServices) -> None:
        self.services = services

    def missing_configuration(self) -> list[str]:
        """What the archive cannot do with the current settings, in words an operator acts on."""
        settings, missing = self.services.settings, []
        if self.services.helix is None:
            missing.append("TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET are not set: VOD discovery and the catalog are off")
        if settings.youtube_upload_enabled and not self.services.youtube.configured:
            missing.append("YOUTUBE_UPLOAD_ENABLED is on but YT_CLIENT_ID/YT_CLIENT_SECRET are not set")
        return missing

    async def status(self, _runtime: Runtime) -> dict[str, Any]:
        """vod-tender's /status fields, computed from the vods table and the task queue."""
        services = self.services
        settings = await services.current_settings()
        counts = await services.vods.counts()
        averages = await services.kv.get_many([*AVERAGE_KEYS, "job_vod_process_last"])
        body: dict[str, Any] = {
            "pending": counts.pending,
            "errored": counts.errored,
            "processed": counts.processed,
            "queue_by_priority": [
                {"priority": p, "count": c} for p, c in await services.vods.unprocessed_by_priority()
            ],
            "active_downloads": await services.vods.running_tasks(ArchiveTask.DOWNLOAD),
            "max_concurrent_downloads": settings.max_concurrent_downloads,
            "retry_config": {
                "download_max_attempts": settings.download_max_attempts,
                "download_backoff_base": format_duration(settings.download_backoff_base),
                "upload_max_attempts": settings.upload_max_attempts,
                "upload_backoff_base": format_duration(settings.upload_backoff_base),
                "processing_retry_cooldown": format_duration(settings.processing_retry_cooldown),
            },
            "last_process_run": averages.get("job_vod_process_last"),
            "archive_configuration_missing": self.missing_configuration(),
        }
        if settings.download_rate_limit:
            body["download_rate_limit"] = settings.download_rate_limit
        for key in AVERAGE_KEYS:
            body[key] = int(averages[key]) if key in averages else None
        return body

    async def monitor(self, _runtime: Runtime) -> dict[str, Any]:
        """vod-tender's `/admin/monitor` VOD fields. `oldest_pending` is core's (oldest queued
        task), so the oldest unprocessed VOD is `oldest_pending_vod`."""
        vods = self.services.vods
        counts = await vods.counts()
        oldest = await vods.oldest_pending()
        stamps = await latest_stamps(vods.engine, JOB_TIMESTAMP_KEYS)
        return {
            "vods_pending": counts.pending,
            "vods_errored": counts.errored,
            "vods_processed": counts.processed,
            "oldest_pending_vod": {"id": oldest.twitch_vod_id, "date": rfc3339(oldest.date)} if oldest else None,
            **stamps,
        }

    async def refresh_gauges(self, _runtime: Runtime) -> None:
        """The queue gauge mirrors the vods table before each scrape."""
        depth = await self.services.vods.unprocessed_by_channel()
        metrics.QUEUE_DEPTH.clear()
        for channel, count in depth.items():
            metrics.QUEUE_DEPTH.labels(channel).set(count)
        if not depth:
            metrics.QUEUE_DEPTH.labels("").set(0)
