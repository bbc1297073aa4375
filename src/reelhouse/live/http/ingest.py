"""nginx-rtmp's callbacks: `on_publish` checks the publish key and flips the stream live;
`on_publish_done` ends it. Authenticated by a token in the callback URL (derived from the
master key, written only into nginx's config); not part of the public API."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from reelhouse.core.http.deps import component
from reelhouse.core.http.errors import error_response
from reelhouse.core.jobs.errors import TaskError
from reelhouse.core.media.probe import probe_media
from reelhouse.live import keys
from reelhouse.live.hls import Segment, Track
from reelhouse.live.ingest import CALLBACK_PATH
from reelhouse.live.lifecycle import go_live, go_offline
from reelhouse.live.metrics import PUBLISH_REFUSED
from reelhouse.live.services import LiveServices

log = logging.getLogger("reelhouse.live.ingest")
router = APIRouter(tags=["live"], include_in_schema=False)
Services = component(LiveServices)
MAX_FORM = 8192


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    return {k: v[0][:512] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _refuse(status: int, reason: str) -> Response:
    PUBLISH_REFUSED.labels(reason).inc()
    log.info("publish refused: %s", reason, extra={"component": "live"})
    return error_response(status, f"publish refused: {reason}")


@router.post(f"{CALLBACK_PATH}/publish")
async def on_publish(
    request: Request, token: str = Query("", max_length=128), services: LiveServices = Services
) -> Response:
    if not hmac.compare_digest(token.encode(), services.callback_token.encode()):
        return error_response(403, "bad callback token")
    form = await _form(request)
    key, client = form.get("name", ""), form.get("clientid", "")
    if form.get("app") != "live" or not key.startswith(keys.KEY_PREFIX):
        return _refuse(403, "unknown key")
    store = services.store
    async with store.tx() as conn:
        stream = await store.by_key_hash(conn, keys.key_hash(key))
        if stream is None or not keys.key_matches(key, stream["key_hash"]):
            return _refuse(403, "unknown key")
        if stream["is_live"]:
            return _refuse(409, "already live")
        session = await go_live(services, conn, stream, client)
    log.info("stream live", extra={"component": "live", "stream_id": stream["id"], "session": session})
    # The redirect renames the stream inside nginx: pulls use the playback id, never the key.
    return Response(status_code=302, headers={"Location": stream["playback_id"]})


@router.post(f"{CALLBACK_PATH}/publish-done")
async def on_publish_done(
    request: Request, token: str = Query("", max_length=128), services: LiveServices = Services
) -> Response:
    if not hmac.compare_digest(token.encode(), services.callback_token.encode()):
        return error_response(403, "bad callback token")
    form = await _form(request)
    client = form.get("clientid", "")
    store = services.store
    async with store.tx() as conn:
        stream = await store.by_client(conn, client[:32]) if client else None
        if stream is not None:
            await go_offline(services, conn, int(stream["id"]))
            log.info("stream ended", extra={"component": "live", "stream_id": stream["id"]})
    return Response(status_code=200)


@router.post(f"{CALLBACK_PATH}/record-done")
async def on_record_done(
    request: Request, token: str = Query("", max_length=128), services: LiveServices = Services
) -> Response:
    """A recorded chunk is complete: upload it and append it to the session's recording."""
    if not hmac.compare_digest(token.encode(), services.callback_token.encode()):
        return error_response(403, "bad callback token")
    form = await _form(request)
    rec_dir = (services.settings.nginx_prefix(services.runtime_settings.server.data_dir) / "rec").resolve()
    path = Path(form.get("path", "")).resolve()
    if path.parent != rec_dir or not path.is_file():
        return error_response(400, "not a recorded chunk of this ingest")
    try:
        name = form.get("name", "")
        stream = await services.store.by_playback_id(name)
        if stream is None and name.startswith(keys.KEY_PREFIX):  # nginx may report the name as published
            async with services.store.engine.connect() as conn:
                stream = await services.store.by_key_hash(conn, keys.key_hash(name))
        if stream is None:
            log.warning("recorded chunk of an unknown stream", extra={"component": "live"})
            return Response(status_code=200)
        stream_id, session = int(stream["id"]), int(stream["session"])
        if not stream["record"]:
            return Response(status_code=200)
        lock = services.record_locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            try:
                info = await probe_media(path, settings=services.runtime_settings.media)
            except TaskError as exc:
                log.warning("recorded chunk unreadable: %s", exc, extra={"component": "live", "stream_id": stream_id})
                return Response(status_code=200)
            if info.video is None:
                # A publisher that stops just after nginx starts a new chunk leaves one with the
                # stream headers and no picture; concatenated, it would fail the whole recording.
                log.info(
                    "recorded chunk without a picture left out", extra={"component": "live", "stream_id": stream_id}
                )
                return Response(status_code=200)
            storage = services.storage()
            track = await Track.load(storage, services.recording_folder(stream_id, session), None)
            name = f"{len(track.segments):06d}.flv"
            await storage.put(f"{track.folder}/{name}", path)
            track.add(Segment(name, info.duration or 0.0))
            await track.save(storage)
            await services.store.update_recording(stream_id, session, segments=len(track.segments))
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return Response(status_code=200)
