"""Admin actions on the archive: scan and catalog as queued tasks, priority, skip-upload.

vod-tender ran the catalog backfill inside the HTTP request (minutes at 1.2 s per Helix page,
§12.23); here scan and catalog only enqueue a task and answer at once with its id, which
`/v1/tasks/{id}` follows. vod-tender also accepted GET for scan and catalog; a GET that changes
state is a CSRF hazard, so GET answers 405 naming the POST to use.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from reelhouse.archive.http.schemas import CatalogQueued, PrioritySet, ScanQueued, SkipUploadSet
from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.settings import check_channel_name
from reelhouse.core.http.deps import Admin, JsonObject, component
from reelhouse.core.http.errors import error_body, errors, json_body_doc, object_schema
from reelhouse.core.security.audit import append as audit

router = APIRouter(tags=["archive admin"])
Services = Annotated[ArchiveServices, component(ArchiveServices)]
ChannelParam = Annotated[str | None, Query(max_length=64, description="default TWITCH_CHANNEL")]
_INT32 = (-(2**31), 2**31 - 1)
_COUNT_MAX = 1_000_000
_STRING = {"type": "string", "maxLength": 64}


def channel_login(value: Any, what: str = "channel") -> str:
    if not isinstance(value, str):
        raise HTTPException(400, f"{what} must be a string")
    try:
        return check_channel_name(value)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _resolve_channel(services: ArchiveServices, channel: str | None) -> str:
    if channel:
        return channel_login(channel)
    default = services.settings.twitch_channel
    if not default:
        raise HTTPException(400, "channel is required (no TWITCH_CHANNEL is configured)")
    return channel_login(default, "TWITCH_CHANNEL")


def _use_post(path: str) -> JSONResponse:
    message = f"GET {path} no longer changes state; send POST {path} (admin)"
    return JSONResponse(error_body(405, message), status_code=405, headers={"Allow": "POST"})


@router.post("/admin/vod/scan", response_model=ScanQueued, responses=errors(400), summary="Queue discovery (admin)")
async def scan(services: Services, principal: Admin, channel: ChannelParam = None) -> ScanQueued:
    """Discovery of a channel's latest VODs, as the `vod.discover` task with that channel."""
    name = _resolve_channel(services, channel)
    task_id = (await services.queue.enqueue(ArchiveTask.DISCOVER, {"channel": name}, max_attempts=3)).task_id
    await audit(services.vods.engine, principal.name, "vod.scan", f"channel:{name}", {"task_id": task_id})
    return ScanQueued(channel=name, task_id=task_id)


@router.post(
    "/admin/vod/catalog",
    response_model=CatalogQueued,
    responses=errors(400),
    summary="Queue a catalog backfill (admin; ?channel&max&max_age_days)",
)
async def catalog(
    services: Services,
    principal: Admin,
    channel: ChannelParam = None,
    max: Annotated[int, Query(ge=0, le=_COUNT_MAX, description="VODs to read this run; 0 = VOD_CATALOG_MAX")] = 0,
    max_age_days: Annotated[int, Query(ge=0, le=36500, description="0 = VOD_CATALOG_MAX_AGE_DAYS")] = 0,
) -> CatalogQueued:
    name = _resolve_channel(services, channel)
    payload = {"channel": name, "max": max, "max_age_days": max_age_days}
    task_id = (await services.queue.enqueue(ArchiveTask.CATALOG, payload, max_attempts=3)).task_id
    await audit(
        services.vods.engine,
        principal.name,
        "vod.catalog",
        f"channel:{name}",
        {"task_id": task_id, "max": max, "max_age_days": max_age_days},
    )
    return CatalogQueued(channel=name, max=max, max_age_days=max_age_days, task_id=task_id)


def _refuse_get(path: str) -> Any:
    async def refuse() -> JSONResponse:
        return _use_post(path)

    return refuse


for _path in ("/admin/vod/scan", "/admin/vod/catalog"):
    router.add_api_route(_path, _refuse_get(_path), methods=["GET"], include_in_schema=False)


def _vod_id(body: dict[str, Any]) -> str:
    value = body.get("vod_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise HTTPException(400, "vod_id is required (a Twitch VOD id)")
    return value.strip()


_PRIORITY_BODY = json_body_doc(object_schema(["vod_id", "priority"], vod_id=_STRING, priority={"type": "integer"}))
_SKIP_BODY = json_body_doc(object_schema(["vod_id", "skip_upload"], vod_id=_STRING, skip_upload={"type": "boolean"}))


# vod-tender accepted PUT as well as POST for priority and skip-upload; both stay, one operation each.
_PRIORITY_ROUTE: dict[str, Any] = {
    "response_model": PrioritySet,
    "responses": errors(400, 404),
    "openapi_extra": _PRIORITY_BODY,
    "summary": "Set a VOD's priority (admin; higher runs first)",
}
_SKIP_ROUTE: dict[str, Any] = {
    "response_model": SkipUploadSet,
    "responses": errors(400, 404),
    "openapi_extra": _SKIP_BODY,
    "summary": "Opt a VOD out of (or back into) upload (admin)",
}


@router.put("/admin/vod/priority", name="set_priority_put", **_PRIORITY_ROUTE)
@router.post("/admin/vod/priority", **_PRIORITY_ROUTE)
async def set_priority(body: JsonObject, services: Services, principal: Admin) -> PrioritySet:
    vod_id = _vod_id(body)
    priority = body.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not _INT32[0] <= priority <= _INT32[1]:
        raise HTTPException(400, "priority must be a 32-bit integer (higher runs first)")
    if not await services.vods.set_priority(vod_id, priority):
        raise HTTPException(404, f"vod {vod_id} not found")
    await audit(services.vods.engine, principal.name, "vod.priority", f"vod:{vod_id}", {"priority": priority})
    return PrioritySet(vod_id=vod_id, priority=priority)


@router.put("/admin/vod/skip-upload", name="set_skip_upload_put", **_SKIP_ROUTE)
@router.post("/admin/vod/skip-upload", **_SKIP_ROUTE)
async def set_skip_upload(body: JsonObject, services: Services, principal: Admin) -> SkipUploadSet:
    vod_id = _vod_id(body)
    skip = body.get("skip_upload")
    if not isinstance(skip, bool):
        raise HTTPException(400, "skip_upload must be true or false")
    if not await services.vods.update(vod_id, skip_upload=skip):
        raise HTTPException(404, f"vod {vod_id} not found")
    await audit(services.vods.engine, principal.name, "vod.skip_upload", f"vod:{vod_id}", {"skip_upload": skip})
    return SkipUploadSet(vod_id=vod_id, skip_upload=skip)
