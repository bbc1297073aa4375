"""`/v1/restreams`: send a file from storage or a URL to an RTMP(S) destination, `-re` paced,
once or looped, now or at a scheduled time. Each is a job with one `live.restream_file` task."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from reelhouse.core.http.bounds import excerpt
from reelhouse.core.http.deps import DbId, Limit, Operator, Viewer, component
from reelhouse.core.http.errors import errors
from reelhouse.core.jobs.control import cancel_job
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.net.outbound import BlockedDestination, OutboundPolicy
from reelhouse.core.storage import InvalidKey, ObjectNotFound, validate_key
from reelhouse.live import kinds
from reelhouse.live.http.schemas import RestreamCreate, RestreamList, RestreamView
from reelhouse.live.http.streams import check_destination_url, public_url
from reelhouse.live.services import LiveServices

router = APIRouter(tags=["live"])
Services = component(LiveServices)


def view(row: dict[str, Any]) -> RestreamView:
    return RestreamView(
        **{k: row[k] for k in RestreamView.model_fields if k in row and k != "url"},
        url=public_url(row["url"]),
        has_key=bool(row["key_ciphertext"]),
    )


@router.post(
    "/v1/restreams",
    response_model=RestreamView,
    status_code=201,
    responses=errors(400),
    summary="Restream a stored file or a URL to an RTMP(S) destination (once or looped, -re paced)",
)
async def create_restream(body: RestreamCreate, caller: Operator, services: LiveServices = Services) -> RestreamView:
    if (body.source_key is None) == (body.source_url is None):
        raise HTTPException(400, "give exactly one of source_key and source_url")
    url = await check_destination_url(services, body.url)
    if body.source_key is not None:
        try:
            validate_key(body.source_key)
            await services.storage().stat(body.source_key)
        except InvalidKey as exc:
            raise HTTPException(400, f"source_key: {exc.reason}") from None
        except ObjectNotFound:
            raise HTTPException(400, f"source_key {excerpt(body.source_key)} does not exist") from None
        source, source_kind = body.source_key, "key"
    else:
        source = (body.source_url or "").strip()
        if not source.startswith(("http://", "https://")):
            raise HTTPException(400, "source_url: must be http(s)")
        try:
            await OutboundPolicy.from_settings(services.runtime_settings).check_url(source)
        except BlockedDestination as exc:
            raise HTTPException(400, f"source_url: {exc}") from None
        source_kind = "url"
    row = await services.store.add_restream(
        {"user_id": caller.user_id, "source": source, "source_kind": source_kind, "url": url, "mode": body.mode,
         "state": "scheduled" if body.start_at else "queued"}
    )  # fmt: skip
    restream_id = int(row["id"])
    ciphertext = services.keyring.encrypt(body.key, services.restream_key_context(restream_id)) if body.key else None
    queue = TaskQueue(services.store.engine)
    async with services.store.engine.begin() as conn:
        job_id = await queue.create_job(conn, "live.restream", {"restream_id": restream_id}, user_id=caller.user_id)
        await queue.add_task(
            conn, job_id, kinds.KIND_RESTREAM_FILE, {"restream_id": restream_id}, run_after=body.start_at,
            max_attempts=5, idempotency_key=f"live:restream:{restream_id}",
        )  # fmt: skip
    await services.store.update_restream(restream_id, job_id=job_id, key_ciphertext=ciphertext)
    found = await services.store.get_restream(restream_id)
    assert found is not None
    return view(found)


@router.get("/v1/restreams", response_model=RestreamList, summary="File/URL restreams (the caller's)")
async def list_restreams(caller: Viewer, limit: Limit = 100, services: LiveServices = Services) -> RestreamList:
    user = None if caller.has_role("admin") or caller.user_id is None else caller.user_id
    return RestreamList(restreams=[view(r) for r in await services.store.list_restreams(user, limit)])


async def _owned(services: LiveServices, restream_id: int, caller: Any) -> dict[str, Any]:
    row = await services.store.get_restream(restream_id)
    if row is None or not (caller.has_role("admin") or caller.user_id is None or row["user_id"] == caller.user_id):
        raise HTTPException(404, f"restream {restream_id} not found")
    return row


@router.get("/v1/restreams/{restream_id}", response_model=RestreamView, responses=errors(404), summary="A restream")
async def get_restream(restream_id: DbId, caller: Viewer, services: LiveServices = Services) -> RestreamView:
    return view(await _owned(services, restream_id, caller))


@router.post(
    "/v1/restreams/{restream_id}/stop", response_model=RestreamView, responses=errors(404), summary="Stop a restream"
)
async def stop_restream(restream_id: DbId, caller: Operator, services: LiveServices = Services) -> RestreamView:
    row = await _owned(services, restream_id, caller)
    if row["job_id"]:
        await cancel_job(services.store.engine, int(row["job_id"]))
    await services.store.update_restream(restream_id, state="stopped")
    return view(await _owned(services, restream_id, caller))
