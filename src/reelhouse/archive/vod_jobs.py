"""A VOD's job: creating it (idempotently), superseding it on reprocess, and giving every
unprocessed VOD of a channel one.

A VOD's work is one job (kind `vod.archive`) made of a `vod.download` task that, on success,
adds a `vod.upload` task to the same job; `vods.job_id` points at the VOD's current job. Job
keys are `vod:<id>:g<n>`, n derived from the job being superseded, so callers racing to create
the same job all get the same one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from reelhouse.archive.kinds import VOD_JOB, ArchiveTask, DownloadState
from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.store import VodNotFound, VodStore
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue


class PlaceholderVod(ValueError):
    """A live-chat placeholder has no archive to download yet."""

    def __init__(self, vod_id: str) -> None:
        super().__init__(f"vod {vod_id} is a live placeholder; it has no archive to download yet")


class VodJobs:
    def __init__(
        self, vods: VodStore, queue: TaskQueue, current_settings: Callable[[], Awaitable[ArchiveSettings]]
    ) -> None:
        self.vods = vods
        self.queue = queue
        self._settings = current_settings

    async def enqueue(self, vod_id: str, *, reprocess: bool = False) -> int:
        """The VOD's job id: the existing job, or with `reprocess` a new generation after it
        (the caller cancels the old job first). Raises VodNotFound, PlaceholderVod."""
        return await self._enqueue(vod_id, reprocess=reprocess, supersede=None)

    async def _enqueue(self, vod_id: str, *, reprocess: bool, supersede: int | None) -> int:
        row = await self.vods.with_job(vod_id)
        if row is None:
            raise VodNotFound(vod_id)
        if row.is_placeholder:
            raise PlaceholderVod(vod_id)
        if supersede is not None and row.job_id != supersede:
            return int(row.job_id)  # someone else already moved this VOD to a newer job
        has_job = row.job_id is not None and row.job_status is not None
        if has_job and not reprocess:
            return int(row.job_id)
        generation = 0
        if has_job:
            match = re.fullmatch(rf"vod:{re.escape(vod_id)}:g(\d+)", row.job_key or "")
            generation = int(match.group(1)) + 1 if match else 1
        settings = await self._settings()
        enqueued = await self.queue.enqueue(
            ArchiveTask.DOWNLOAD,
            {"vod_id": vod_id, "channel": row.channel, "generation": generation},
            job_kind=VOD_JOB,
            priority=row.priority,
            max_attempts=settings.download_max_attempts,
            idempotency_key=f"vod:{vod_id}:g{generation}",
        )
        await self.vods.point_at_job(vod_id, enqueued.job_id, new_job=enqueued.created)
        return enqueued.job_id

    async def enqueue_pending(self, channel: str, *, limit: int = 500) -> list[int]:
        """Give a job to every unprocessed VOD of `channel` without live work: new rows
        (discovery, catalog, chat reconciliation, API) and rows an operator reset with the
        runbook SQL (`processing_error=NULL`, `processed=false`). A job cancelled while still
        queued never ran a handler, so its row is marked cancelled here rather than silently
        re-enqueued."""
        created = []
        for row in await self.vods.unprocessed_for_channel(channel, limit):
            if row.job_status == states.JOB_CANCELLED:
                await self.vods.update(
                    row.twitch_vod_id, processing_error="cancelled by operator", download_state=DownloadState.CANCELED
                )
                continue
            created.append(
                await self._enqueue(row.twitch_vod_id, reprocess=row.job_id is not None, supersede=row.job_id)
            )
        return created
