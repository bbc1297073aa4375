"""Helpers for tests that drive the archive domain directly."""

from __future__ import annotations

from reelhouse.archive.plugin import setup
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.vod_jobs import VodJobs
from reelhouse.core.runtime import Runtime


def archive_services(runtime: Runtime) -> ArchiveServices:
    """The runtime's archive services, registering the archive first if it is not yet."""
    if ArchiveServices not in runtime.components:
        setup(runtime)
    return runtime.component(ArchiveServices)


def vod_jobs(runtime: Runtime) -> VodJobs:
    return archive_services(runtime).vod_jobs
