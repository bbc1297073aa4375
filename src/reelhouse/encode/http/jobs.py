"""`POST /v1/jobs` (upload, URL or storage key) and a job's outputs.

Job inspection and control stay on core's routes (`GET /v1/jobs[/{id}]`, `/cancel`, `/retry`).
Every field has a bound (URLs 8 KiB, names the safe character set), ids are bounded to the
64-bit columns, and errors quote at most a short prefix of a bad value.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, select

from reelhouse.core.db.models import jobs, task_attempts, tasks
from reelhouse.core.http.deps import DbId, Operator, RuntimeDep, Viewer, component
from reelhouse.core.http.errors import errors
from reelhouse.core.http.jobs import job_view
from reelhouse.core.http.middleware import allow_body
from reelhouse.core.jobs import control, states
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.users import Principal
from reelhouse.encode import assets as asset_store
from reelhouse.encode.assets import _writing
from reelhouse.encode.http.schemas import JOB_BODY_DOC, AssetView, CreatedJob, JobBody, UploadFields
from reelhouse.encode.models import encode_events
from reelhouse.encode.plugins import PluginError
from reelhouse.encode.segments import job_segments
from reelhouse.encode.service import JOB_KIND, delete_prefix
from reelhouse.encode.services import EncodeServices
from reelhouse.encode.submit import EncodeRequest, SubmitError, create_encode_job, prepare_encode, submit_encode
from reelhouse.encode.uploads import UploadInvalid, UploadTooLarge, receive_upload

router = APIRouter(tags=["encode"])
Services = Annotated[EncodeServices, component(EncodeServices)]
# Multipart framing and form fields on top of the file itself.
UPLOAD_OVERHEAD = 256 << 10


def problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def job_request(body: JobBody) -> EncodeRequest:
    if (body.source_url is None) == (body.source_key is None):
        raise HTTPException(400, "give exactly one of source_url or source_key (or upload a file as multipart 'file')")
    profile, more = body.profile, tuple[str, ...]()
    if body.profiles is not None:
        if profile is not None or not body.profiles:
            raise HTTPException(400, "give 'profile' or a non-empty 'profiles' list, not both")
        profile, more = body.profiles[0], tuple(body.profiles[1:])
    return EncodeRequest(
        source_kind="url" if body.source_url is not None else "key",
        source_url=body.source_url,
        source_key=body.source_key,
        profile=profile,
        preset=body.preset,
        output_prefix=body.output_prefix,
        more_profiles=more,
    )


def with_key(request: EncodeRequest, key: str) -> EncodeRequest:
    return EncodeRequest(
        source_kind=request.source_kind,
        source_key=key,
        source_name=request.source_name,
        profile=request.profile,
        preset=request.preset,
        output_prefix=request.output_prefix,
    )


async def from_json(services: EncodeServices, request: Request, principal: Principal) -> dict[str, Any]:
    try:
        body = JobBody.model_validate(json.loads(await request.body() or b"{}"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "request body is not valid JSON (UTF-8)") from None
    except ValidationError as exc:
        raise HTTPException(422, f"invalid request: {problems(exc)}") from None
    return await submit_encode(
        services.service, services.pipeline, job_request(body), actor=principal.name, user_id=principal.user_id
    )


async def from_upload(services: EncodeServices, request: Request, principal: Principal) -> dict[str, Any]:
    service = services.service
    limit = service.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + UPLOAD_OVERHEAD:
        raise HTTPException(413, f"upload of {declared[:20]} bytes exceeds MAX_UPLOAD_BYTES ({limit} bytes)")
    async with service.scratch("upload") as tmp:
        try:
            received = await receive_upload(request, tmp / "upload", max_bytes=limit)
        except UploadTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except UploadInvalid as exc:
            raise HTTPException(400, str(exc)) from None
        if received.size == 0:
            raise HTTPException(400, "the uploaded file is empty")
        try:
            fields = UploadFields.model_validate({k: v or None for k, v in received.fields.items()})
        except ValidationError as exc:
            raise HTTPException(422, f"invalid form field: {problems(exc)}") from None
        request_ = EncodeRequest(
            source_kind="upload",
            source_name=(received.filename or "")[:255] or None,
            profile=fields.profile,
            preset=fields.preset,
            output_prefix=fields.output_prefix,
        )
        prepared = await prepare_encode(service, request_, check_source=False)
        key = service.upload_key(received.filename)
        storage = service.storage()
        await storage.put(key, tmp / "upload")
    try:
        result = await create_encode_job(
            service,
            services.pipeline,
            with_key(request_, key),
            prepared,
            actor=principal.name,
            user_id=principal.user_id,
        )
    except BaseException:
        await storage.delete(key)
        raise
    result["upload"] = {"key": key, "size_bytes": received.size, "filename": received.filename}
    return result


def allow_upload_body(request: Request) -> None:
    """Raise the body limit for multipart uploads to MAX_UPLOAD_BYTES (JSON keeps the global one)."""
    services: EncodeServices = request.app.state.runtime.component(EncodeServices)
    allow_body(services.service.settings.max_upload_bytes + UPLOAD_OVERHEAD)(request)


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=CreatedJob,
    openapi_extra=JOB_BODY_DOC,
    responses=errors(400, 409, 413, 415),
    dependencies=[Depends(allow_upload_body)],
    summary="Submit an encode: multipart upload `file`, or JSON source_url / source_key (operator)",
)
async def create_job(
    request: Request, response: Response, services: Services, runtime: RuntimeDep, principal: Operator
) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not await services.plugins.enabled("encoder"):
        raise HTTPException(409, "no encoder plugin is enabled (POST /v1/plugins/encoder-ffmpeg/enable)")
    try:
        if content_type == "multipart/form-data":
            result = await from_upload(services, request, principal)
        elif content_type in ("application/json", ""):
            result = await from_json(services, request, principal)
        else:
            raise HTTPException(
                415, f"unsupported Content-Type {content_type[:60]!r}; use application/json or multipart/form-data"
            )
    except SubmitError as exc:
        raise HTTPException(exc.status, exc.message) from None
    await audit(services.engine, principal.name, "encode.submit", f"job:{result['job_id']}")
    job = await control.get_job(services.engine, result["job_id"])
    if job is not None:  # WebEncode's Job fields beside reelhouse's
        result = {**job_view(runtime, job), **result}
    response.headers["Location"] = f"/v1/jobs/{result['job_id']}"
    return result


@router.get(
    "/v1/jobs/{job_id}/outputs",
    response_model=AssetView,
    responses=errors(404),
    summary="The encode job's asset: renditions and playback URLs",
)
async def job_outputs(job_id: DbId, services: Services, _p: Viewer) -> dict[str, Any]:
    asset = await asset_store.get_asset(services.engine, job_id=job_id)
    if asset is not None:
        return {**asset, "segments": await job_segments(services.engine, job_id)}
    job = await control.get_job(services.engine, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    raise HTTPException(
        404,
        f"job {job_id} has no outputs (status {job['status']}"
        + (f": {str(job['error'])[:300]}" if job.get("error") else "")
        + ")",
    )


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    platform: str = Field(min_length=1, max_length=48, pattern=r"^[a-z0-9_-]+$")
    access_token: str = Field(min_length=1, max_length=8192, description="stored encrypted; never returned")
    title: str = Field("", max_length=200)
    description: str = Field("", max_length=5000)
    output_key: str | None = Field(None, max_length=1024)


class PublishAnswer(BaseModel):
    success: bool
    message: str
    publish_job_id: str = Field(description="the publish job: GET /v1/jobs/{id} shows platform_id/url when done")
    task_id: int


@router.post(
    "/v1/jobs/{job_id}/publish",
    response_model=PublishAnswer,
    responses=errors(400, 404),
    summary="Publish a completed job's output through publisher-<platform> (operator; runs as its own job)",
)
async def publish_job(job_id: DbId, body: PublishBody, services: Services, principal: Operator) -> dict[str, Any]:
    try:
        answer = await services.publishing.submit(job_id, body.model_dump(), principal.name)
    except PluginError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await audit(services.engine, principal.name, "job.publish", f"job:{job_id}", {"platform": body.platform})
    return answer


class JobLogLine(BaseModel):
    id: str
    job_id: str
    level: str = Field(description="info | warn | error")
    message: str
    metadata: dict[str, Any] | None
    created_at: str


@router.get(
    "/v1/jobs/{job_id}/logs",
    response_model=list[JobLogLine],
    responses=errors(404),
    summary="The job's log lines, oldest first: each task's runs and errors, from the engine's records",
)
async def job_logs(job_id: DbId, services: Services, _p: Viewer) -> list[dict[str, Any]]:
    job = await control.get_job(services.engine, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    lines: list[tuple[str, str, str, dict[str, Any]]] = []
    for task in job["tasks"]:
        meta = {"task_id": str(task["id"]), "kind": task["kind"]}
        lines.append((task["created_at"], "info", f"{task['kind']} queued", meta))
        for run in task.get("history") or []:
            level = "warn" if run.get("outcome") in ("retried", "lost", "released") else "error"
            at = run.get("ended_at") or task["created_at"]
            text = f"{task['kind']} attempt {run.get('attempt')} {run.get('outcome')}"
            if run.get("error"):
                text += f": {str(run['error'])[:500]}"
            lines.append((at, level, text, {**meta, "worker": run.get("worker")}))
        if task.get("started_at"):
            lines.append((task["started_at"], "info", f"{task['kind']} started (attempt {task['attempts']})", meta))
        if task.get("finished_at"):
            failed = task["status"] not in ("succeeded",)
            text = f"{task['kind']} {task['status']}" + (
                f": {str(task['last_error'])[:500]}" if failed and task.get("last_error") else ""
            )
            lines.append((task["finished_at"], "error" if failed else "info", text, meta))
    lines.sort(key=lambda line: line[0] or "")
    return [
        {
            "id": f"{job_id}-{n}",
            "job_id": str(job_id),
            "level": level,
            "message": text,
            "metadata": meta,
            "created_at": at,
        }
        for n, (at, level, text, meta) in enumerate(lines, 1)
    ]


@router.delete(
    "/v1/jobs/{job_id}",
    status_code=204,
    responses=errors(404, 409),
    summary="Delete a finished encode job with its tasks, history and outputs (operator)",
)
async def delete_job(job_id: DbId, services: Services, principal: Operator) -> Response:
    engine = services.engine
    job = await control.get_job(engine, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    if job["kind"] != JOB_KIND:
        raise HTTPException(409, f"job {job_id} is a {job['kind']} job; only encode jobs are deleted here")
    if job["status"] not in states.JOB_FINAL:
        raise HTTPException(409, f"job {job_id} is {job['status']}; cancel it first")
    asset = await asset_store.get_asset(engine, job_id=job_id)
    if asset is not None:
        await delete_prefix(services.service.storage(), asset["output_prefix"])
        await asset_store.delete_asset(engine, asset["id"])
    async with _writing(engine) as conn:
        doomed = select(tasks.c.id).where(tasks.c.job_id == job_id)
        await conn.execute(delete(task_attempts).where(task_attempts.c.task_id.in_(doomed)))
        await conn.execute(delete(tasks).where(tasks.c.job_id == job_id))
        await conn.execute(delete(encode_events).where(encode_events.c.job_id == job_id))
        await conn.execute(delete(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(list(states.JOB_FINAL))))
    await audit(engine, principal.name, "job.delete", f"job:{job_id}")
    return Response(status_code=204)
