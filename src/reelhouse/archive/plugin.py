"""Archive domain registration: called by core through the `reelhouse.domains` entry point."""

from __future__ import annotations

from reelhouse.archive import models  # noqa: F401 - registers the archive tables on the metadata
from reelhouse.core.runtime import Runtime


def setup(runtime: Runtime) -> None:
    """Register archive task kinds, periodic tasks, routes and /status fields."""
