"""Plugins (WebEncode's `/v1/plugins`): list, show, configure, enable, disable. The state is
shared by every node and honoured (a disabled encoder plugin stops new jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from reelhouse.core.http.deps import Admin, Viewer, component
from reelhouse.core.http.errors import errors
from reelhouse.core.security.audit import append as audit
from reelhouse.encode.plugins import PluginError
from reelhouse.encode.services import EncodeServices

router = APIRouter(tags=["plugins"])
Services = Annotated[EncodeServices, component(EncodeServices)]
PluginId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class PluginView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    version: str
    api_version: int
    source: str = Field(description="builtin | entry-point | plugin-dir")
    is_enabled: bool
    priority: int
    config: dict[str, Any] | None
    health: str = Field(description="healthy | disabled | failed")
    error: str | None = Field(description="why a plugin failed to load (e.g. Incompatible API version)")


class UpdatePlugin(BaseModel):
    config: dict[str, Any]
    priority: int | None = Field(None, ge=-1000, le=1000)


class PluginStatus(BaseModel):
    status: str


def failed(exc: PluginError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


@router.get("/v1/plugins", response_model=list[PluginView], summary="Loaded (and refused) plugins")
async def list_plugins(services: Services, _p: Viewer) -> list[dict[str, Any]]:
    registry = services.plugins.registry
    return [await services.plugins.view(p) for p in sorted(registry.plugins.values(), key=lambda p: p.id)]


@router.get("/v1/plugins/{plugin_id}", response_model=PluginView, responses=errors(404), summary="One plugin")
async def get_plugin(plugin_id: PluginId, services: Services, _p: Viewer) -> dict[str, Any]:
    try:
        return await services.plugins.view(services.plugins.registry.get(plugin_id))
    except PluginError as exc:
        raise failed(exc) from None


@router.put(
    "/v1/plugins/{plugin_id}", response_model=PluginStatus, responses=errors(400, 404), summary="Configure (admin)"
)
async def update_plugin(plugin_id: PluginId, body: UpdatePlugin, services: Services, principal: Admin) -> PluginStatus:
    try:
        await services.plugins.configure(plugin_id, body.config, body.priority)
    except PluginError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "plugin.configure", f"plugin:{plugin_id}")
    return PluginStatus(status="updated")


@router.post(
    "/v1/plugins/{plugin_id}/enable", response_model=PluginStatus, responses=errors(404, 409), summary="Enable (admin)"
)
async def enable_plugin(plugin_id: PluginId, services: Services, principal: Admin) -> PluginStatus:
    try:
        await services.plugins.enable(plugin_id, True)
    except PluginError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "plugin.enabled", f"plugin:{plugin_id}")
    return PluginStatus(status="enabled")


@router.post(
    "/v1/plugins/{plugin_id}/disable", response_model=PluginStatus, responses=errors(404), summary="Disable (admin)"
)
async def disable_plugin(plugin_id: PluginId, services: Services, principal: Admin) -> PluginStatus:
    try:
        await services.plugins.enable(plugin_id, False)
    except PluginError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "plugin.disabled", f"plugin:{plugin_id}")
    return PluginStatus(status="disabled")
