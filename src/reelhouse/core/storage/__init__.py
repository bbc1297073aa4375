"""Object storage: one `Storage` protocol, a filesystem and an S3 backend, and plugins.

Backends are found through the `reelhouse.storage` entry-point group; a backend is a factory
`(settings, *, signing_secret=None) -> Storage`. The built-in `fs` and `s3` register there like
any plugin; the fallback table below only covers an installation whose metadata predates them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from reelhouse.core.storage.base import (
    ByteRange,
    ByteSource,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    guess_content_type,
    validate_key,
)

if TYPE_CHECKING:
    from reelhouse.config import Settings

ENTRY_POINT_GROUP = "reelhouse.storage"

StorageFactory = Callable[..., Storage]

_BUILTIN = {
    "fs": "reelhouse.core.storage.fs:from_settings",
    "s3": "reelhouse.core.storage.s3:from_settings",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "ByteRange",
    "ByteSource",
    "InvalidKey",
    "InvalidRange",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "available_backends",
    "guess_content_type",
    "load_backend",
    "open_storage",
    "validate_key",
]


def available_backends() -> list[str]:
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(_BUILTIN)
    return sorted(names)


def load_backend(name: str) -> StorageFactory:
    """The factory registered under `name`; a StorageError lists the known names otherwise."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            return ep.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise StorageError(f"storage backend {name!r} ({ep.value}) failed to load: {exc}") from exc
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise StorageError(
        f"unknown storage backend {name!r} (STORAGE_BACKEND); available: {', '.join(available_backends())}"
    )


def open_storage(settings: Settings, *, signing_secret: bytes | None = None) -> Storage:
    """The backend STORAGE_BACKEND names, configured from `settings`.

    `signing_secret` keys the filesystem backend's signed URLs; without it one is derived
    from MASTER_ENCRYPTION_KEY. Call `await storage.aclose()` on shutdown.
    """
    factory = load_backend(settings.storage.storage_backend)
    storage = factory(settings, signing_secret=signing_secret)
    if not isinstance(storage, Storage):
        raise StorageError(
            f"storage backend {settings.storage.storage_backend!r} returned {type(storage).__name__}, "
            "which does not implement the Storage protocol"
        )
    return storage
