"""Turn an encode request into a job: validate everything a caller can get wrong up front (profile,
preset, output prefix, source), then create the job and its first task in one transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import update

from reelhouse.core.db.models import jobs
from reelhouse.core.http.bounds import excerpt
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.media.profiles import Profile
from reelhouse.core.net.outbound import OutboundPolicy
from reelhouse.core.storage import InvalidKey, ObjectNotFound, validate_key
from reelhouse.core.storage.base import validate_prefix
from reelhouse.encode import assets as asset_store
from reelhouse.encode.fetch import check_source_url
from reelhouse.encode.metrics import JOBS_CREATED
from reelhouse.encode.pipeline import KIND_FETCH, KIND_PROBE, EncodePipeline
from reelhouse.encode.profiles_store import ProfileError, resolve_profile, with_preset
from reelhouse.encode.service import JOB_KIND, EncodeService, EncodeSpec, ProfileChoice, prefix_is_empty

RESERVED_PREFIX = re.compile(r"^job-\d+$")


class SubmitError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class EncodeRequest:
    source_kind: Literal["upload", "url", "key"]
    source_key: str | None = None
    source_url: str | None = None
    source_name: str | None = None
    profile: str | None = None
    preset: str | None = None
    output_prefix: str | None = None
    more_profiles: tuple[str, ...] = ()
    """Further profiles of the same job (WebEncode's `profiles[]`): each encoded to its own asset."""


def clean_output_prefix(value: str | None) -> str | None:
    """A caller's prefix, relative to ENCODE_OUTPUT_PREFIX: outputs can never land on another
    domain's objects (archive VODs, vault media) whatever the caller writes."""
    if value is None or not value.strip().strip("/"):
        return None
    cleaned = value.strip().strip("/")
    try:
        validate_prefix(cleaned)
    except InvalidKey as exc:
        raise SubmitError(400, f"output_prefix: {exc.reason}") from None
    if RESERVED_PREFIX.match(cleaned.split("/", 1)[0]):
        raise SubmitError(400, "output_prefix: names like 'job-<id>' are reserved for jobs without a prefix")
    return cleaned


@dataclass(frozen=True)
class PreparedEncode:
    profile: Profile
    requested_prefix: str | None
    more_profiles: tuple[Profile, ...] = ()


async def prepare_encode(
    service: EncodeService, request: EncodeRequest, *, check_source: bool = True
) -> PreparedEncode:
    """Every check that can fail because of the request, so an upload is stored only for a
    request that will be accepted. Raises `SubmitError` with the HTTP status and the reason."""
    try:
        profile = with_preset(
            await resolve_profile(service.engine, request.profile or service.settings.default_profile), request.preset
        )
        more = tuple(
            [with_preset(await resolve_profile(service.engine, name), request.preset) for name in request.more_profiles]
        )
    except ProfileError as exc:
        raise SubmitError(400, str(exc)) from None
    names = [profile.name, *(p.name for p in more)]
    if len(set(names)) != len(names):
        raise SubmitError(400, f"profiles: each profile once per job, got {', '.join(names)}")
    requested_prefix = clean_output_prefix(request.output_prefix)
    if check_source:
        await _check_source(service, request)
    if requested_prefix is not None:
        await _check_prefix_free(service, service.output_prefix(0, requested_prefix))
    return PreparedEncode(profile, requested_prefix, more)


async def create_encode_job(
    service: EncodeService,
    pipeline: EncodePipeline,
    request: EncodeRequest,
    prepared: PreparedEncode,
    *,
    actor: str,
    user_id: int | None = None,
) -> dict[str, Any]:
    """The job row and its first task, in one transaction: a job is never visible without work."""
    engine = service.engine
    profile = prepared.profile
    first_kind = KIND_FETCH if request.source_kind == "url" else KIND_PROBE
    queue = TaskQueue(engine)
    async with engine.begin() as conn:
        job_id = await queue.create_job(conn, JOB_KIND, {}, user_id=user_id)
        spec = EncodeSpec(
            source_kind=request.source_kind,
            source_key=request.source_key,
            source_url=request.source_url,
            source_name=request.source_name,
            profile_name=profile.name,
            profile=profile.model_dump(mode="json"),
            output_prefix=service.output_prefix(job_id, prepared.requested_prefix),
            more_profiles=[
                ProfileChoice(name=more.name, profile=more.model_dump(mode="json")) for more in prepared.more_profiles
            ],
        )
        payload = spec.payload()
        task_id = await queue.add_task(
            conn,
            job_id,
            first_kind,
            payload,
            idempotency_key=f"encode:{job_id}:{first_kind}",
            **pipeline.follow_up_options(first_kind),
        )
        # The job row carries the request too, so `GET /v1/jobs?kind=encode` shows what each job is.
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(payload={**payload, "requested_by": actor}))
    JOBS_CREATED.labels(request.source_kind).inc()
    return {
        "job_id": job_id,
        "task_id": task_id,
        "status": "queued",
        "first_task": first_kind,
        "profile": profile.name,
        "profiles": [profile.name, *(more.name for more in prepared.more_profiles)],
        "output_prefix": spec.output_prefix,
        "source": {"kind": spec.source_kind, "key": spec.source_key, "url": spec.source_url},
        "links": {"job": f"/v1/jobs/{job_id}", "outputs": f"/v1/jobs/{job_id}/outputs"},
    }


async def submit_encode(
    service: EncodeService, pipeline: EncodePipeline, request: EncodeRequest, *, actor: str, user_id: int | None = None
) -> dict[str, Any]:
    prepared = await prepare_encode(service, request)
    return await create_encode_job(service, pipeline, request, prepared, actor=actor, user_id=user_id)


async def _check_source(service: EncodeService, request: EncodeRequest) -> None:
    if request.source_kind == "url":
        try:
            url = check_source_url(request.source_url or "")
            # Checked again on every connection the fetch makes (core.net.outbound.GuardedProxy);
            # this check gives the caller a clear 400 now instead of a failed job later.
            await OutboundPolicy.from_settings(service.runtime.settings).check_url(url)
        except ValueError as exc:  # BlockedDestination included
            raise SubmitError(400, f"source_url: {exc}") from None
        return
    try:
        validate_key(request.source_key)
    except InvalidKey as exc:
        raise SubmitError(400, f"source_key: {exc.reason}") from None
    try:
        await service.storage().stat(request.source_key or "")
    except ObjectNotFound:
        raise SubmitError(400, f"source_key {excerpt(request.source_key)} does not exist in storage") from None


async def _check_prefix_free(service: EncodeService, prefix: str) -> None:
    owner = await asset_store.prefix_taken(service.engine, prefix)
    if owner is not None:
        raise SubmitError(409, f"output prefix {excerpt(prefix)} already belongs to asset {owner}")
    if not await prefix_is_empty(service.storage(), prefix):
        raise SubmitError(409, f"output prefix {excerpt(prefix)} already holds objects; choose another")
