"""`/channels`: which Twitch channels the archive watches (every node reads the table, so a
change needs no restart)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response

from reelhouse.archive.http.admin import channel_login
from reelhouse.archive.http.schemas import ChannelView, rfc3339
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store import Channel
from reelhouse.archive.store.live import RECORD_MODES
from reelhouse.core.http.deps import Admin, JsonObject, Operator, Viewer, component
from reelhouse.core.http.errors import errors, json_body_doc, object_schema
from reelhouse.core.security.audit import append as audit

router = APIRouter(tags=["channels"])
Services = Annotated[ArchiveServices, component(ArchiveServices)]


def channel_view(channel: Channel) -> ChannelView:
    return ChannelView(
        name=channel.name,
        twitch_user_id=channel.twitch_user_id,
        enabled=channel.enabled,
        paused=channel.paused,
        source=channel.source,
        created_at=rfc3339(channel.created_at),
        record_mode=channel.record_mode,
    )


def record_mode(value: Any) -> str:
    if value not in RECORD_MODES:
        raise HTTPException(400, f"record_mode must be one of {', '.join(RECORD_MODES)}")
    return str(value)


@router.get("/channels", response_model=list[ChannelView], summary="Channels (enabled ones, or all with ?all=true)")
async def list_channels(services: Services, _caller: Viewer, all: bool = False) -> list[ChannelView]:
    return [channel_view(c) for c in await services.channels.list_channels(include_disabled=all)]


@router.post(
    "/channels",
    status_code=201,
    response_model=ChannelView,
    responses=errors(400, 409),
    openapi_extra=json_body_doc(
        object_schema(
            ["name"],
            name={"type": "string", "maxLength": 64},
            record_mode={"type": "string", "enum": list(RECORD_MODES)},
        )
    ),
    summary="Watch a Twitch channel (admin)",
)
async def add_channel(body: JsonObject, services: Services, principal: Admin) -> ChannelView:
    name = channel_login(body.get("name"), "name")
    mode = record_mode(body["record_mode"]) if "record_mode" in body else None
    if not await services.channels.add_channel(name, source="api"):
        raise HTTPException(409, f"channel {name} is already watched")
    if mode is not None:
        await services.live.set_record_mode(name, mode)
    await audit(services.vods.engine, principal.name, "channel.add", f"channel:{name}")
    listed = await services.channels.list_channels()
    return channel_view(next(c for c in listed if c.name == name))


@router.delete(
    "/channels/{name}",
    status_code=204,
    response_class=Response,
    responses=errors(400, 404),
    summary="Stop watching a channel (admin); its VODs, files and chat are kept",
)
async def remove_channel(name: str, services: Services, principal: Admin) -> Response:
    login = channel_login(name, "name")
    if not await services.channels.remove_channel(login):
        raise HTTPException(404, f"channel {login} is not watched")
    await audit(services.vods.engine, principal.name, "channel.remove", f"channel:{login}")
    return Response(status_code=204)


async def _pause(name: str, paused: bool, services: ArchiveServices, actor: str) -> ChannelView:
    login = channel_login(name, "name")
    channel = await services.channels.set_paused(login, paused)
    if channel is None:
        raise HTTPException(404, f"channel {login} is not watched")
    await audit(services.vods.engine, actor, "channel.pause" if paused else "channel.resume", f"channel:{login}")
    return channel_view(channel)


@router.post(
    "/channels/{name}/pause",
    response_model=ChannelView,
    responses=errors(400, 404),
    summary="Pause a channel (operator): no discovery and no chat recording until resumed; queued VODs go on",
)
async def pause_channel(name: str, services: Services, principal: Operator) -> ChannelView:
    return await _pause(name, True, services, principal.name)


@router.post(
    "/channels/{name}/resume", response_model=ChannelView, responses=errors(400, 404), summary="Resume a paused channel"
)
async def resume_channel(name: str, services: Services, principal: Operator) -> ChannelView:
    return await _pause(name, False, services, principal.name)


@router.patch(
    "/channels/{name}",
    response_model=ChannelView,
    responses=errors(400, 404),
    openapi_extra=json_body_doc(
        object_schema(["record_mode"], record_mode={"type": "string", "enum": list(RECORD_MODES)})
    ),
    summary="Change how a channel is archived (admin): record_mode vod | live | both",
)
async def update_channel(name: str, body: JsonObject, services: Services, principal: Admin) -> ChannelView:
    login = channel_login(name, "name")
    unknown = sorted(set(body) - {"record_mode"})
    if unknown:
        raise HTTPException(400, f"unknown field(s): {', '.join(unknown)[:200]}")
    mode = record_mode(body.get("record_mode"))
    if not await services.live.set_record_mode(login, mode):
        raise HTTPException(404, f"channel {login} is not watched")
    await audit(services.vods.engine, principal.name, "channel.update", f"channel:{login} record_mode={mode}")
    listed = await services.channels.list_channels(include_disabled=True)
    return channel_view(next(c for c in listed if c.name == login))
