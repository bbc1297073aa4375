"""Plugins: storage, encoder, publisher and auth extensions, found two ways and registered one way.

- Python entry points in the groups `reelhouse.storage`, `reelhouse.encoder`,
  `reelhouse.publisher`, `reelhouse.auth` (an installed package); the value is the plugin
  object or a factory, which may carry a `MANIFEST` dict.
- Packages dropped into `PLUGIN_DIR`: `<PLUGIN_DIR>/<id>/plugin.toml` with a `[plugin]` table
  (`id`, `type`, `version`, `api_version`, `entry = "module:attr"`) beside the module.

Built-ins register through the same `PluginRegistry.register` as everything else. A manifest
whose `api_version` is not `API_VERSION` is refused with "Incompatible API version" (seed 002's
"Plugin Mismatch") and listed as failed with that reason. Whether a plugin is enabled, its
priority and its configuration are stored in `kv` (channel `plugin`), so every node honours a
change made through `/v1/plugins/{id}/enable|disable` or `PUT /v1/plugins/{id}`.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.jobs.kv import get_value, set_value
from reelhouse.encode.assets import _writing as writing

log = logging.getLogger("reelhouse.encode.plugins")
API_VERSION = 1
KINDS = ("storage", "encoder", "publisher", "auth")
KV_CHANNEL = "plugin"
MAX_CONFIG_BYTES = 16 << 10


class PluginError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Plugin:
    id: str
    type: str
    version: str
    api_version: int
    source: str  # builtin | entry-point | plugin-dir
    obj: Any = None
    error: str | None = None
    description: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)


def check_manifest(manifest: dict[str, Any], origin: str) -> tuple[str, str, str, int]:
    table = manifest.get("plugin", manifest)
    plugin_id, kind = str(table.get("id", "")), str(table.get("type", ""))
    if not plugin_id or len(plugin_id) > 64 or not all(c.isalnum() or c in "-_." for c in plugin_id):
        raise PluginError(400, f"{origin}: plugin id missing or not [A-Za-z0-9._-]{{1,64}}")
    if kind not in KINDS:
        raise PluginError(400, f"{origin}: type must be one of {', '.join(KINDS)}")
    try:
        api = int(table.get("api_version", table.get("protocol_version", 0)))
    except (TypeError, ValueError):
        api = 0
    return plugin_id, kind, str(table.get("version", "0")), api


class PluginRegistry:
    def __init__(self) -> None:
        self.plugins: dict[str, Plugin] = {}

    def register(self, manifest: dict[str, Any], obj: Any, source: str) -> Plugin:
        plugin_id, kind, version, api = check_manifest(manifest, source)
        table = manifest.get("plugin", manifest)
        plugin = Plugin(plugin_id, kind, version, api, source, description=str(table.get("description", "")))
        plugin.capabilities = dict(manifest.get("capabilities", {}))
        if api != API_VERSION:
            plugin.error = (
                f"Incompatible API version: plugin {plugin_id} was built for API {api}, "
                f"this reelhouse provides API {API_VERSION}"
            )
            log.error("plugin refused", extra={"plugin": plugin_id, "reason": plugin.error})
        else:
            plugin.obj = obj
        if plugin_id in self.plugins and self.plugins[plugin_id].error is None and plugin.error is None:
            raise PluginError(409, f"plugin {plugin_id} registered twice ({self.plugins[plugin_id].source}, {source})")
        self.plugins[plugin_id] = plugin
        return plugin

    def load_entry_points(self) -> None:
        for kind in KINDS:
            for ep in entry_points(group=f"reelhouse.{kind}"):
                try:
                    obj = ep.load()
                    manifest = getattr(obj, "MANIFEST", None) or {
                        "id": f"{kind}-{ep.name}",
                        "type": kind,
                        "version": getattr(ep.dist, "version", "0") if ep.dist else "0",
                        "api_version": API_VERSION,
                    }
                    self.register(manifest, obj, "entry-point")
                except Exception as exc:  # a broken plugin is listed as failed, never stops start-up
                    self._failed(f"{kind}-{ep.name}", kind, f"{type(exc).__name__}: {str(exc)[:200]}", "entry-point")

    def load_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            return
        for manifest_path in sorted(directory.glob("*/plugin.toml"))[:200]:
            origin = f"{manifest_path.parent.name}/plugin.toml"
            try:
                manifest = tomllib.loads(manifest_path.read_text())
                _, _, _, api = check_manifest(manifest, origin)
                obj = None
                entry = str(manifest.get("plugin", manifest).get("entry", ""))
                if api == API_VERSION and entry:
                    module_name, _, attr = entry.partition(":")
                    root = str(manifest_path.parent)
                    if root not in sys.path:
                        sys.path.insert(0, root)
                    obj = importlib.import_module(module_name)
                    obj = getattr(obj, attr) if attr else obj
                self.register(manifest, obj, "plugin-dir")
            except PluginError as exc:
                self._failed(manifest_path.parent.name, "", str(exc), "plugin-dir")
            except Exception as exc:
                self._failed(
                    manifest_path.parent.name, "", f"{origin}: {type(exc).__name__}: {str(exc)[:200]}", "plugin-dir"
                )

    def _failed(self, plugin_id: str, kind: str, error: str, source: str) -> None:
        if plugin_id in self.plugins and self.plugins[plugin_id].error is None:
            log.error("duplicate plugin ignored", extra={"plugin": plugin_id, "reason": error})
            return
        log.error("plugin not loaded", extra={"plugin": plugin_id, "reason": error})
        self.plugins[plugin_id] = Plugin(plugin_id, kind or "publisher", "0", 0, source, error=error)

    def get(self, plugin_id: str) -> Plugin:
        plugin = self.plugins.get(plugin_id)
        if plugin is None:
            raise PluginError(404, f"plugin {plugin_id[:64]!r} not found")
        return plugin


class PluginState:
    """Enabled flag, priority and configuration per plugin, in `kv` (shared by every node).

    The registry is loaded on first use: loading imports every plugin (the S3 backend's aioboto3
    alone takes a quarter of a second), which commands that never look at plugins should not
    pay. `reelhouse serve` loads it at start-up, so a broken plugin is logged then."""

    def __init__(self, engine: AsyncEngine, load: Callable[[], PluginRegistry]) -> None:
        self.engine = engine
        self._load = load

    @functools.cached_property
    def registry(self) -> PluginRegistry:
        return self._load()

    async def state(self, plugin_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            raw = await get_value(conn, plugin_id, KV_CHANNEL)
        stored = json.loads(raw) if raw else {}
        return {
            "is_enabled": stored.get("is_enabled", True),
            "priority": stored.get("priority", 0),
            "config": stored.get("config", {}),
        }

    async def _update(self, plugin_id: str, **changes: Any) -> None:
        self.registry.get(plugin_id)
        current = await self.state(plugin_id)
        current.update(changes)
        text = json.dumps(current)
        if len(text) > MAX_CONFIG_BYTES:
            raise PluginError(400, f"plugin configuration larger than {MAX_CONFIG_BYTES} bytes")
        async with writing(self.engine) as conn:
            await set_value(conn, plugin_id, text, KV_CHANNEL)

    async def enable(self, plugin_id: str, enabled: bool) -> None:
        if enabled and self.registry.get(plugin_id).error:
            raise PluginError(409, f"plugin {plugin_id} cannot be enabled: {self.registry.get(plugin_id).error}")
        await self._update(plugin_id, is_enabled=enabled)

    async def configure(self, plugin_id: str, config: dict[str, Any], priority: int | None) -> None:
        changes: dict[str, Any] = {"config": config}
        if priority is not None:
            changes["priority"] = priority
        await self._update(plugin_id, **changes)

    async def view(self, plugin: Plugin) -> dict[str, Any]:
        state = await self.state(plugin.id)
        enabled = bool(state["is_enabled"]) and plugin.error is None
        health = "failed" if plugin.error else ("healthy" if enabled else "disabled")
        return {
            "id": plugin.id,
            "type": plugin.type,
            "version": plugin.version,
            "api_version": plugin.api_version,
            "source": plugin.source,
            "description": plugin.description,
            "is_enabled": enabled,
            "priority": int(state["priority"]),
            "config": state["config"],
            "health": health,
            "error": plugin.error,
            "capabilities": plugin.capabilities,
        }

    async def enabled(self, kind: str) -> list[Plugin]:
        """Plugins of `kind` that may be used now, highest priority first (what callers honour)."""
        found = []
        for plugin in self.registry.plugins.values():
            if plugin.type == kind and plugin.error is None:
                state = await self.state(plugin.id)
                if state["is_enabled"]:
                    found.append((int(state["priority"]), plugin))
        return [p for _, p in sorted(found, key=lambda item: -item[0])]


# Built-ins that are not entry points already (core's storage backends are: `reelhouse.storage`
# fs and s3, listed as storage-fs and storage-s3).
BUILTINS: list[dict[str, Any]] = [
    {"id": "encoder-ffmpeg", "type": "encoder", "description": "ffmpeg transcodes and HLS ladders"},
    {"id": "auth-tokens", "type": "auth", "description": "users, sessions and API tokens (core/security)"},
]


def build_registry(plugin_dir: Path) -> PluginRegistry:
    from reelhouse import __version__

    registry = PluginRegistry()
    from reelhouse.encode.publishers import BUILTIN_PUBLISHERS

    for builtin in BUILTINS:
        registry.register({**builtin, "version": __version__, "api_version": API_VERSION}, None, "builtin")
    for publisher in BUILTIN_PUBLISHERS:
        registry.register(publisher.MANIFEST, publisher, "builtin")
    registry.load_entry_points()
    registry.load_dir(plugin_dir)
    return registry
