"""Admin endpoints: scan/catalog as queued tasks, priority, skip-upload, runtime config,
channel management, and the archive's `/admin/monitor` fields.

vod-tender ran the catalog backfill inside the HTTP request (minutes at 1.2 s per Helix page,
§12.23); here scan and catalog only enqueue a task and answer at once with its id, which
`/v1/tasks/{id}` follows.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy import func, select, update

from reelhouse.archive.api import engine_of, json_object, rfc3339
from reelhouse.archive.models import vods
from reelhouse.archive import channels as channel_store
from reelhouse.archive.settings import ArchiveSettings, check_channel_name
from reelhouse.archive.settings import archive_settings as archive_section
from reelhouse.archive.settings_overrides import (
    OverrideError,
    apply_overrides,
    current_config,
    set_process_log_level,
    validate_changes,
    write_overrides,
)
from reelhouse.core.db.models import jobs, kv, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import require_admin, require_viewer
from reelhouse.core.security.users import Principal

router = APIRouter(tags=["archive admin"])
_INT32 = (-(2**31), 2**31 - 1)
JOB_TIMESTAMP_KEYS = ("job_vod_process_last", "job_vod_discovery_last", "job_vod_backfill_last",
                      "job_vod_catalog_last")


def archive_settings(request: Request) -> ArchiveSettings:
    return archive_section(request.app.state.runtime.settings)


def channel_login(value: Any, what: str = "channel") -> str:
    if not isinstance(value, str):
        raise HTTPException(400, f"{what} must be a string")
    try:
        return check_channel_name(value)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _resolve_channel(request: Request, channel: str | None) -> str:
    if channel:
        return channel_login(channel)
    default = archive_settings(request).twitch_channel
    if not default:
        raise HTTPException(400, "channel is required (no TWITCH_CHANNEL is configured)")
    return channel_login(default, "TWITCH_CHANNEL")


def _non_negative(name: str, raw: str | None) -> int:
    if raw in (None, ""):
        return 0
    if not raw.isdigit():
        raise HTTPException(400, f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


# ---- scan and catalog: queued, never run inside the request --------------------------------------

async def _scan(request: Request, channel: str | None, principal: Principal) -> dict[str, Any]:
    name = _resolve_channel(request, channel)
    engine = engine_of(request)
    # The pipeline's `vod.discover` task with a channel: discovery of that channel only.
    enqueued = await TaskQueue(engine).enqueue("vod.discover", {"channel": name}, max_attempts=3)
    task_id = enqueued.task_id
    await audit(engine, principal.name, "vod.scan", f"channel:{name}", {"task_id": task_id})
    return {"status": "ok", "channel": name, "task_id": task_id}


@router.get("/admin/vod/scan", summary="Queue discovery of a channel's latest VODs (admin)")
async def scan_get(request: Request, channel: str | None = None,
                   principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _scan(request, channel, principal)


@router.post("/admin/vod/scan", summary="Queue discovery of a channel's latest VODs (admin)")
async def scan_post(request: Request, channel: str | None = None,
                    principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _scan(request, channel, principal)


async def _catalog(request: Request, principal: Principal) -> dict[str, Any]:
    params = request.query_params
    name = _resolve_channel(request, params.get("channel"))
    max_count = _non_negative("max", params.get("max"))
    max_age_days = _non_negative("max_age_days", params.get("max_age_days"))
    engine = engine_of(request)
    payload = {"channel": name, "max": max_count, "max_age_days": max_age_days}
    task_id = (await TaskQueue(engine).enqueue("vod.catalog", payload, max_attempts=3)).task_id
    await audit(engine, principal.name, "vod.catalog", f"channel:{name}",
                {"task_id": task_id, "max": max_count, "max_age_days": max_age_days})
    return {"status": "ok", "channel": name, "max": max_count, "max_age_days": max_age_days,
            "task_id": task_id}


@router.get("/admin/vod/catalog", summary="Queue a catalog backfill (admin; ?channel&max&max_age_days)")
async def catalog_get(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _catalog(request, principal)


@router.post("/admin/vod/catalog", summary="Queue a catalog backfill (admin; ?channel&max&max_age_days)")
async def catalog_post(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _catalog(request, principal)


# ---- priority and skip-upload ------------------------------------------------------------------

def _vod_id(body: dict[str, Any]) -> str:
    value = body.get("vod_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise HTTPException(400, "vod_id is required")
    return value.strip()


async def _update_vod(request: Request, vod_id: str, values: dict[str, Any]) -> Any:
    async with engine_of(request).begin() as conn:
        row = (await conn.execute(update(vods).where(vods.c.twitch_vod_id == vod_id)
                                  .values(**values, updated_at=utcnow()).returning(vods.c.job_id))).first()
    if row is None:
        raise HTTPException(404, f"vod {vod_id} not found")
    return row.job_id


async def _priority(request: Request, principal: Principal) -> dict[str, Any]:
    body = await json_object(request)
    vod_id = _vod_id(body)
    priority = body.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not _INT32[0] <= priority <= _INT32[1]:
        raise HTTPException(400, "priority must be an integer (higher runs first)")
    job_id = await _update_vod(request, vod_id, {"priority": priority})
    if job_id is not None:
        # Queued work picks up the new priority too: the claim orders by task priority.
        async with engine_of(request).begin() as conn:
            await conn.execute(update(tasks).where(tasks.c.job_id == job_id, tasks.c.status == states.QUEUED)
                               .values(priority=priority))
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(priority=priority))
    await audit(engine_of(request), principal.name, "vod.priority", f"vod:{vod_id}", {"priority": priority})
    return {"status": "ok", "vod_id": vod_id, "priority": priority}


@router.post("/admin/vod/priority", summary="Set a VOD's priority (admin)")
async def priority_post(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _priority(request, principal)


@router.put("/admin/vod/priority", summary="Set a VOD's priority (admin)")
async def priority_put(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _priority(request, principal)


async def _skip_upload(request: Request, principal: Principal) -> dict[str, Any]:
    body = await json_object(request)
    vod_id = _vod_id(body)
    skip = body.get("skip_upload")
    if not isinstance(skip, bool):
        raise HTTPException(400, "skip_upload must be true or false")
    await _update_vod(request, vod_id, {"skip_upload": skip})
    await audit(engine_of(request), principal.name, "vod.skip_upload", f"vod:{vod_id}", {"skip_upload": skip})
    return {"status": "ok", "vod_id": vod_id, "skip_upload": skip}


@router.post("/admin/vod/skip-upload", summary="Opt a VOD out of (or back into) upload (admin)")
async def skip_upload_post(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _skip_upload(request, principal)


@router.put("/admin/vod/skip-upload", summary="Opt a VOD out of (or back into) upload (admin)")
async def skip_upload_put(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return await _skip_upload(request, principal)


# ---- runtime configuration ---------------------------------------------------------------------

@router.get("/config", summary="Effective values of the safe configuration keys")
async def get_config(request: Request) -> dict[str, str]:
    runtime = request.app.state.runtime
    sources = (archive_settings(request), runtime.settings.server, runtime.settings.logging)
    return await current_config(runtime.engine, sources)


@router.put("/config", status_code=204,
            summary="Override safe keys at runtime (admin); null removes an override")
async def put_config(request: Request, principal: Principal = Depends(require_admin)) -> Response:
    body = await json_object(request)
    try:
        changes = validate_changes(body)
        # The settings model's own constraints too, so an override is accepted only if the
        # same text in the environment variable would be.
        apply_overrides(archive_settings(request), {k: v for k, v in changes.items() if v is not None},
                        strict=True)
    except OverrideError as exc:
        raise HTTPException(400, str(exc)) from None
    engine = engine_of(request)
    await write_overrides(engine, changes)
    if changes.get("LOG_LEVEL"):
        set_process_log_level(changes["LOG_LEVEL"].lower())
    await audit(engine, principal.name, "config.update", "config", {"keys": sorted(changes)})
    return Response(status_code=204)


# ---- channels ----------------------------------------------------------------------------------

def _channel_view(channel: channel_store.Channel) -> dict[str, Any]:
    return {"name": channel.name, "twitch_user_id": channel.twitch_user_id, "enabled": channel.enabled,
            "source": channel.source, "created_at": rfc3339(channel.created_at)}


@router.get("/channels", summary="Channels (enabled ones, or all with ?all=true)")
async def list_channels(request: Request, all: bool = False,
                        _p: Principal = Depends(require_viewer)) -> list[dict[str, Any]]:
    listed = await channel_store.list_channels(engine_of(request), include_disabled=all)
    return [_channel_view(channel) for channel in listed]


@router.post("/channels", status_code=201, summary="Watch a Twitch channel (admin)")
async def add_channel(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    body = await json_object(request)
    name = channel_login(body.get("name"), "name")
    engine = engine_of(request)
    if not await channel_store.add_channel(engine, name, source="api"):
        raise HTTPException(409, f"channel {name} is already watched")
    await audit(engine, principal.name, "channel.add", f"channel:{name}")
    listed = await channel_store.list_channels(engine)
    return _channel_view(next(c for c in listed if c.name == name))


@router.delete("/channels/{name}", status_code=204,
               summary="Stop watching a channel (admin); its VODs, files and chat are kept")
async def remove_channel(request: Request, name: str, principal: Principal = Depends(require_admin)) -> Response:
    login = channel_login(name, "name")
    engine = engine_of(request)
    if not await channel_store.remove_channel(engine, login):
        raise HTTPException(404, f"channel {login} is not watched")
    await audit(engine, principal.name, "channel.remove", f"channel:{login}")
    return Response(status_code=204)


# ---- /status and /admin/monitor fields ----------------------------------------------------------

async def archive_monitor(runtime: Any) -> dict[str, Any]:
    """vod-tender's `/admin/monitor` VOD fields (also shown in `/status`). `oldest_pending` is
    core's (oldest queued task), so the oldest unprocessed VOD is `oldest_pending_vod`."""
    # Same split as the pipeline's /status counts: an error (even on a row an operator marked
    # processed, as the runbook's "permanently failed" does) counts as errored, not pending.
    real = vods.c.is_placeholder.is_(False)
    errored = real & vods.c.processing_error.is_not(None) & (vods.c.processing_error != "")
    pending = real & vods.c.processed.is_(False) & ~errored
    async with runtime.engine.connect() as conn:
        counts = (await conn.execute(select(
            func.count().filter(pending), func.count().filter(errored),
            func.count().filter(real & vods.c.processed.is_(True)),
        ).select_from(vods))).one()
        oldest = (await conn.execute(
            select(vods.c.twitch_vod_id, vods.c.date).where(pending)
            .order_by(vods.c.date.asc().nulls_last(), vods.c.id).limit(1))).first()
        stamps = dict((await conn.execute(
            select(kv.c.key, func.max(kv.c.value)).where(kv.c.key.in_(JOB_TIMESTAMP_KEYS))
            .group_by(kv.c.key))).all())
    return {
        "vods_pending": counts[0], "vods_errored": counts[1], "vods_processed": counts[2],
        "oldest_pending_vod": {"id": oldest.twitch_vod_id, "date": rfc3339(oldest.date)} if oldest else None,
        **{key: stamps.get(key) for key in JOB_TIMESTAMP_KEYS},
    }
