"""`/v1/streams`: streams, their publish keys, destinations and recordings."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, HTTPException, Query

from reelhouse.core.http.bounds import excerpt
from reelhouse.core.http.deps import BeforeId, DbId, Limit, Operator, Viewer, component
from reelhouse.core.http.errors import errors
from reelhouse.core.jobs.control import request_cancel
from reelhouse.core.media.profiles import BUILTIN_PROFILES
from reelhouse.core.net.outbound import BlockedDestination, OutboundPolicy
from reelhouse.core.security.links import make_token
from reelhouse.core.security.users import Principal
from reelhouse.live import keys
from reelhouse.live.http.schemas import (
    DestinationCreate,
    DestinationList,
    DestinationUpdate,
    DestinationView,
    PlaybackLink,
    RecordingList,
    RecordingView,
    StreamCreate,
    StreamList,
    StreamUpdate,
    StreamView,
    StreamWithKey,
    Telemetry,
)
from reelhouse.live.lifecycle import enqueue_restream
from reelhouse.live.services import LiveServices
from reelhouse.live.store import StreamNotFound

router = APIRouter(tags=["live"])
Services = component(LiveServices)


def public_url(url: str) -> str:
    """The URL without credentials (a user:password@ part is a secret too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def stream_view(services: LiveServices, row: dict[str, Any]) -> dict[str, Any]:
    telemetry = row["telemetry"]
    if telemetry is not None or row["is_live"]:
        telemetry = {**(telemetry or {}), "viewers": services.viewers.count(int(row["id"]))}
    settings = services.settings
    host = settings.ingest_host if settings.rtmp_bind in ("0.0.0.0", "::") else settings.rtmp_bind
    return {
        **{k: row[k] for k in StreamView.model_fields if k in row},
        "telemetry": Telemetry(**telemetry) if telemetry is not None else None,
        "ingest_url": f"rtmp://{host}:{settings.rtmp_port}/live",
        "playback_url": f"/v1/streams/{row['id']}/live/master.m3u8",
    }


def destination_view(row: dict[str, Any]) -> DestinationView:
    return DestinationView(
        **{k: row[k] for k in DestinationView.model_fields if k in row and k != "url"},
        url=public_url(row["url"]),
        has_key=bool(row["key_ciphertext"]),
    )


def owns(caller: Principal, row: dict[str, Any]) -> bool:
    return caller.has_role("admin") or caller.user_id is None or row["user_id"] == caller.user_id


async def load(services: LiveServices, stream_id: int, caller: Principal) -> dict[str, Any]:
    try:
        row = await services.store.get_stream(stream_id)
    except StreamNotFound:
        raise HTTPException(404, f"stream {stream_id} not found") from None
    if not owns(caller, row):
        raise HTTPException(404, f"stream {stream_id} not found")
    return row


def check_profile(name: str) -> str:
    if name not in BUILTIN_PROFILES or BUILTIN_PROFILES[name].kind != "hls":
        hls = ", ".join(n for n, p in BUILTIN_PROFILES.items() if p.kind == "hls")
        raise HTTPException(400, f"profile {excerpt(name)} is not a built-in HLS profile (choose from: {hls})")
    return name


@router.post(
    "/v1/streams",
    response_model=StreamWithKey,
    status_code=201,
    responses=errors(400, 409),
    summary="Create a stream; the publish key is in this response only",
)
async def create_stream(body: StreamCreate, caller: Operator, services: LiveServices = Services) -> dict[str, Any]:
    profile = check_profile(body.profile or services.settings.default_profile)
    if await services.store.count_for_user(caller.user_id) >= services.settings.max_streams_per_user:
        raise HTTPException(409, f"at most {services.settings.max_streams_per_user} streams per user")
    key = keys.new_publish_key()
    row = await services.store.create_stream(
        {
            "user_id": caller.user_id, "title": body.title, "description": body.description,
            "playback_id": keys.new_playback_id(), "key_hash": keys.key_hash(key), "key_hint": keys.key_hint(key),
            "profile": profile, "record": body.record,
        }
    )  # fmt: skip
    return {**stream_view(services, row), "publish_key": key}


@router.get("/v1/streams", response_model=StreamList, summary="Streams (the caller's; admins see all)")
async def list_streams(
    caller: Viewer,
    limit: Limit = 100,
    before_id: BeforeId = None,
    live: bool | None = Query(None, description="only live (true) or offline (false) streams"),
    services: LiveServices = Services,
) -> StreamList:
    user = None if caller.has_role("admin") or caller.user_id is None else caller.user_id
    rows = await services.store.list_streams(user_id=user, live=live, limit=limit, before=before_id)
    return StreamList(streams=[StreamView(**stream_view(services, r)) for r in rows])


@router.get(
    "/v1/streams/{stream_id}",
    response_model=StreamView,
    responses=errors(404),
    summary="A stream with its live state and telemetry",
)
async def get_stream(stream_id: DbId, caller: Viewer, services: LiveServices = Services) -> dict[str, Any]:
    return stream_view(services, await load(services, stream_id, caller))


@router.patch(
    "/v1/streams/{stream_id}",
    response_model=StreamView,
    responses=errors(400, 404),
    summary="Change a stream's title, description, profile or recording",
)
async def update_stream(
    stream_id: DbId, body: StreamUpdate, caller: Operator, services: LiveServices = Services
) -> dict[str, Any]:
    await load(services, stream_id, caller)
    values = body.model_dump(exclude_unset=True, exclude_none=True)
    if "profile" in values:
        check_profile(values["profile"])
    if not values:
        raise HTTPException(400, "nothing to change")
    return stream_view(services, await services.store.update_stream(stream_id, **values))


@router.delete("/v1/streams/{stream_id}", status_code=204, responses=errors(404, 409), summary="Delete a stream")
async def delete_stream(stream_id: DbId, caller: Operator, services: LiveServices = Services) -> None:
    row = await load(services, stream_id, caller)
    if row["is_live"]:
        raise HTTPException(409, "the stream is live; stop publishing first")
    await services.store.delete_stream(stream_id)


@router.post(
    "/v1/streams/{stream_id}/key",
    response_model=StreamWithKey,
    responses=errors(404),
    summary="Rotate the publish key: the old one stops working at once; the new one is shown once",
)
async def rotate_key(stream_id: DbId, caller: Operator, services: LiveServices = Services) -> dict[str, Any]:
    await load(services, stream_id, caller)
    key = keys.new_publish_key()
    row = await services.store.update_stream(stream_id, key_hash=keys.key_hash(key), key_hint=keys.key_hint(key))
    return {**stream_view(services, row), "publish_key": key}


@router.get(
    "/v1/streams/{stream_id}/link",
    response_model=PlaybackLink,
    responses=errors(404),
    summary="A signed, expiring link to the live playlist (no credentials needed)",
)
async def live_link(stream_id: DbId, caller: Viewer, services: LiveServices = Services) -> PlaybackLink:
    import time

    await load(services, stream_id, caller)
    expires = int(time.time() + services.settings.link_ttl.total_seconds())
    scope = services.hls_folder(stream_id)
    path = f"/live/signed/{make_token(services.link_secret, scope, expires)}/{stream_id}/master.m3u8"
    base = services.runtime_settings.server.public_base_url.rstrip("/")
    return PlaybackLink(url=f"{base}{path}", expires_at=expires)


# ---- destinations ----------------------------------------------------------------------------
async def check_destination_url(services: LiveServices, url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
        raise HTTPException(400, "url: must be an rtmp:// or rtmps:// URL with a host")
    try:
        await OutboundPolicy.from_settings(services.runtime_settings).check_url(url)
    except BlockedDestination as exc:
        raise HTTPException(400, f"url: {exc}") from None
    return url


@router.get(
    "/v1/streams/{stream_id}/destinations",
    response_model=DestinationList,
    responses=errors(404),
    summary="Restream destinations with their live status (keys are never returned)",
)
async def list_destinations(stream_id: DbId, caller: Viewer, services: LiveServices = Services) -> DestinationList:
    await load(services, stream_id, caller)
    rows = await services.store.destinations_of(stream_id)
    return DestinationList(destinations=[destination_view(r) for r in rows])


@router.post(
    "/v1/streams/{stream_id}/destinations",
    response_model=DestinationView,
    status_code=201,
    responses=errors(400, 404, 409),
    summary="Add a restream destination (started when the stream is live)",
)
async def add_destination(
    stream_id: DbId, body: DestinationCreate, caller: Operator, services: LiveServices = Services
) -> DestinationView:
    stream = await load(services, stream_id, caller)
    if len(await services.store.destinations_of(stream_id)) >= services.settings.max_destinations:
        raise HTTPException(409, f"at most {services.settings.max_destinations} destinations per stream")
    url = await check_destination_url(services, body.url)
    row = await services.store.add_destination(
        {"stream_id": stream_id, "name": body.name, "url": url, "enabled": body.enabled}
    )
    if body.key:
        ciphertext = services.keyring.encrypt(body.key, services.destination_key_context(int(row["id"])))
        row = await services.store.update_destination(int(row["id"]), key_ciphertext=ciphertext) or row
    if stream["is_live"] and body.enabled:
        await _start_destination(services, stream, int(row["id"]))
    return destination_view(row)


async def _start_destination(services: LiveServices, stream: dict[str, Any], destination_id: int) -> None:
    async with services.store.tx() as conn:
        task_id = await enqueue_restream(
            conn, int(stream["job_id"]), int(stream["id"]), int(stream["session"]), destination_id
        )
        await services.store.update_destination(destination_id, conn, task_id=task_id, state="connecting")


@router.patch(
    "/v1/streams/{stream_id}/destinations/{destination_id}",
    response_model=DestinationView,
    responses=errors(400, 404),
    summary="Change, stop (enabled=false) or start a destination",
)
async def update_destination(
    stream_id: DbId, destination_id: DbId, body: DestinationUpdate, caller: Operator, services: LiveServices = Services
) -> DestinationView:
    stream = await load(services, stream_id, caller)
    current = await services.store.get_destination(destination_id)
    if current is None or current["stream_id"] != stream_id:
        raise HTTPException(404, f"destination {destination_id} not found")
    values: dict[str, Any] = {}
    if body.name is not None:
        values["name"] = body.name
    if body.url is not None:
        values["url"] = await check_destination_url(services, body.url)
    if body.key is not None:
        values["key_ciphertext"] = (
            services.keyring.encrypt(body.key, services.destination_key_context(destination_id)) if body.key else None
        )
    if body.enabled is not None:
        values["enabled"] = body.enabled
    row = await services.store.update_destination(destination_id, **values) if values else current
    assert row is not None
    if body.enabled is False and current["task_id"]:
        await request_cancel(services.store.engine, int(current["task_id"]))
        row = await services.store.update_destination(destination_id, state="stopped") or row
    elif body.enabled and not current["enabled"] and stream["is_live"]:
        await _start_destination(services, stream, destination_id)
    return destination_view(row)


@router.delete(
    "/v1/streams/{stream_id}/destinations/{destination_id}",
    status_code=204,
    responses=errors(404),
    summary="Remove a destination (its restream stops)",
)
async def delete_destination(
    stream_id: DbId, destination_id: DbId, caller: Operator, services: LiveServices = Services
) -> None:
    await load(services, stream_id, caller)
    current = await services.store.get_destination(destination_id)
    if current is None or current["stream_id"] != stream_id:
        raise HTTPException(404, f"destination {destination_id} not found")
    if current["task_id"]:
        await request_cancel(services.store.engine, int(current["task_id"]))
    await services.store.delete_destination(stream_id, destination_id)


# ---- recordings ------------------------------------------------------------------------------
@router.get(
    "/v1/streams/{stream_id}/recordings",
    response_model=RecordingList,
    responses=errors(404),
    summary="Recordings of a stream (one per publish session) and their VOD encode jobs",
)
async def list_recordings(stream_id: DbId, caller: Viewer, services: LiveServices = Services) -> RecordingList:
    await load(services, stream_id, caller)
    rows = await services.store.recordings_of(stream_id)
    return RecordingList(
        recordings=[
            RecordingView(
                **{k: r[k] for k in RecordingView.model_fields if k in r},
                encode_job=f"/v1/jobs/{r['encode_job_id']}" if r["encode_job_id"] else None,
            )
            for r in rows
        ]
    )
