"""The names the archive stores: task and job kinds (`tasks.kind`, `jobs.kind`) and the
`vods.download_state` values the runbook SQL reads."""

from __future__ import annotations

from enum import StrEnum


class ArchiveTask(StrEnum):
    DOWNLOAD = "vod.download"
    UPLOAD = "vod.upload"
    DISCOVER = "vod.discover"
    CATALOG = "vod.catalog"
    RETENTION = "vod.retention"
    CHAT_RECONCILE = "chat.reconcile"
    LIVE_RECORD = "vod.live_record"


# A VOD's work is one job of this kind: its download task, then its upload task.
VOD_JOB = "vod.archive"
# The tasks whose payload names a VOD whose file they use.
FILE_TASKS = (ArchiveTask.DOWNLOAD, ArchiveTask.UPLOAD)


class DownloadState(StrEnum):
    """`vods.download_state`. `canceled` is vod-tender's spelling, kept because its runbooks and
    clients read this column; everywhere else (task and job states) reelhouse writes
    `cancelled`."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"
