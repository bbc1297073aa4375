"""Job and task inspection and control: list, show, cancel, retry.

The job routes answer in WebEncode's shapes (reference webencode-api.yaml) as supersets of
reelhouse's: ids are strings in job and task views, jobs carry `source_url`, `profiles`,
`progress_pct`, `error_message`, `started_at`; `GET /v1/jobs/{id}` adds `job` (the job alone) beside
its `tasks`; tasks carry `type` and `sequence_index`; cancel answers 200 with `status`. A domain
fills in what only it knows through `runtime.job_views` (docs/API.md lists the differences).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from reelhouse.core.http.deps import BeforeId, DbId, Engine, Operator, RuntimeDep, Viewer
from reelhouse.core.http.errors import errors
from reelhouse.core.jobs import control, states
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.audit import append as audit

router = APIRouter(tags=["jobs"])
Limit = Annotated[int, Query(ge=1, le=500)]
Kind = Annotated[str | None, Query(max_length=64, description="task or job kind, e.g. vod.download")]


class TaskView(BaseModel):
    # The engine may add fields (they pass through); these are the ones clients rely on.
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="numeric, as a string (WebEncode's ids are strings)")
    job_id: str | None
    kind: str
    type: str = Field(description="WebEncode's task type: the kind without its domain prefix")
    sequence_index: int = Field(description="segment number of a segment task, else 0")
    updated_at: str | None
    status: str = Field(description=" | ".join(states.TASK_STATES))
    priority: int
    attempts: int
    max_attempts: int
    progress: float = Field(description="0-1")
    progress_detail: dict[str, Any] | None
    last_error: str | None
    error_class: str | None
    lease_owner: str | None
    run_after: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    result: Any = Field(description="what the handler returned (JSON)")
    cancel_requested: bool
    correlation_id: str | None


class JobView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="numeric, as a string (WebEncode's ids are strings)")
    kind: str
    source_url: str = Field(description="WebEncode's field: the source (URL or storage key), '' if none")
    profiles: list[str]
    progress_pct: float = Field(description="0-100")
    error_message: str | None
    started_at: str | None
    status: str = Field(description=" | ".join(states.JOB_STATES))
    priority: int
    user_id: int | None
    progress: float = Field(description="0-1, over the job's tasks")
    error: str | None
    payload: Any
    result: Any
    correlation_id: str | None
    created_at: str | None
    updated_at: str | None
    finished_at: str | None


class JobWithTasks(JobView):
    job: JobView = Field(description="the job alone (WebEncode's {job, tasks})")
    tasks: list[TaskView]
    waiting_for: str | None = Field(
        None, description='e.g. "waiting for a worker with capability h264_nvenc": no live worker can run it'
    )


class TaskOutcome(BaseModel):
    task_id: int
    status: str


class JobCancelled(BaseModel):
    job_id: int
    status: str = Field(description="cancelled, or cancelling while running tasks stop")
    tasks: list[TaskOutcome]


class JobRetried(JobView):
    job_id: int
    retried_task_ids: list[int]


class TaskStatus(BaseModel):
    task_id: int
    status: str


def _check_status(value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise HTTPException(400, f"unknown status {value[:32]!r}; expected one of {', '.join(allowed)}")


async def _job_or_404(engine: Any, job_id: int) -> dict[str, Any]:
    job = await control.get_job(engine, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job


def task_view(task: dict[str, Any]) -> dict[str, Any]:
    detail = task.get("progress_detail") or {}
    segment = task["payload"].get("segment_index") if isinstance(task.get("payload"), dict) else None
    if segment is None and isinstance(detail, dict):
        segment = detail.get("segment_index")
    return {
        **task,
        "id": str(task["id"]),
        "job_id": None if task["job_id"] is None else str(task["job_id"]),
        "type": task["kind"].rsplit(".", 1)[-1],
        "sequence_index": int(segment) if isinstance(segment, int) else 0,
        "updated_at": task.get("updated_at") or task.get("finished_at") or task.get("started_at") or task["created_at"],
    }


def job_view(runtime: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    """reelhouse's job view with WebEncode's fields (the domain's `job_views` fill in the source)."""
    tasks = job.get("tasks") or []
    started = [t["started_at"] for t in tasks if t.get("started_at")]
    view = {
        **{k: v for k, v in job.items() if k != "tasks"},
        "id": str(job["id"]),
        "source_url": "",
        "profiles": [],
        "progress_pct": round(float(job["progress"]) * 100, 1),
        "error_message": job["error"],
        "started_at": min(started) if started else None,
    }
    decorate = runtime.job_views.get(job["kind"])
    if decorate is not None:
        view.update(decorate(job))
    return view


def job_detail(runtime: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    view = job_view(runtime, job)
    return {**view, "job": view, "tasks": [task_view(t) for t in job["tasks"]]}


@router.get(
    "/v1/jobs",
    response_model=list[JobView],
    responses=errors(400),
    summary="List jobs, newest first (keyset pagination with before_id)",
)
async def list_jobs(
    runtime: RuntimeDep,
    _caller: Viewer,
    status: Annotated[str | None, Query(max_length=32)] = None,
    kind: Kind = None,
    limit: Limit = 50,
    before_id: BeforeId = None,
    system: Annotated[bool, Query(description="include system (housekeeping) jobs")] = False,
) -> list[dict[str, Any]]:
    _check_status(status, states.JOB_STATES)
    found = await control.list_jobs(
        runtime.engine, status=status, kind=kind, limit=limit, before_id=before_id, system=system
    )
    return [job_view(runtime, job) for job in found]


@router.get("/v1/jobs/{job_id}", response_model=JobWithTasks, responses=errors(404), summary="A job with its tasks")
async def show_job(job_id: DbId, runtime: RuntimeDep, _caller: Viewer) -> dict[str, Any]:
    return job_detail(runtime, await _job_or_404(runtime.engine, job_id))


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobCancelled,
    responses=errors(404),
    summary="Cancel a job's unfinished tasks (operator)",
)
async def cancel_job(job_id: DbId, engine: Engine, principal: Operator) -> JobCancelled:
    await _job_or_404(engine, job_id)
    outcome = await control.cancel_job(engine, job_id)
    await audit(engine, principal.name, "job.cancel", f"job:{job_id}")
    overall = "cancelling" if any(s == "cancelling" for _, s in outcome) else "cancelled"
    return JobCancelled(job_id=job_id, status=overall, tasks=[TaskOutcome(task_id=t, status=s) for t, s in outcome])


@router.post(
    "/v1/jobs/{job_id}/retry",
    response_model=JobRetried,
    responses=errors(404, 409),
    summary="Requeue a job's failed, dead or cancelled tasks (operator)",
)
async def retry_job(job_id: DbId, runtime: RuntimeDep, principal: Operator) -> dict[str, Any]:
    engine = runtime.engine
    await _job_or_404(engine, job_id)
    retried = await control.retry_job(engine, job_id)
    if not retried:
        raise HTTPException(409, f"job {job_id} has no failed, dead or cancelled task to retry")
    await audit(engine, principal.name, "job.retry", f"job:{job_id}")
    return {**job_view(runtime, await _job_or_404(engine, job_id)), "job_id": job_id, "retried_task_ids": retried}


@router.get(
    "/v1/tasks",
    response_model=list[TaskView],
    responses=errors(400),
    summary="List tasks (e.g. status=dead for the dead-letter list)",
)
async def list_tasks(
    engine: Engine,
    _caller: Viewer,
    status: Annotated[str | None, Query(max_length=32)] = None,
    kind: Kind = None,
    job_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Limit = 50,
    before_id: BeforeId = None,
) -> list[dict[str, Any]]:
    _check_status(status, states.TASK_STATES)
    found = await control.list_tasks(engine, status=status, kind=kind, job_id=job_id, limit=limit, before_id=before_id)
    return [task_view(t) for t in found]


@router.get("/v1/tasks/{task_id}", response_model=TaskView, responses=errors(404), summary="One task")
async def show_task(task_id: DbId, engine: Engine, _caller: Viewer) -> dict[str, Any]:
    task = await control.get_task(engine, task_id)
    if task is None:
        raise HTTPException(404, f"task {task_id} not found")
    return task_view(task)


@router.post(
    "/v1/tasks/{task_id}/cancel",
    status_code=202,
    response_model=TaskStatus,
    responses=errors(409),
    summary="Cancel a task (operator): queued ones at once, running ones at their next poll",
)
async def cancel_task(task_id: DbId, engine: Engine, principal: Operator) -> TaskStatus:
    outcome = await control.cancel_task(engine, task_id)
    if outcome is None:
        raise HTTPException(409, f"task {task_id} is unknown or already finished")
    await audit(engine, principal.name, "task.cancel", f"task:{task_id}")
    return TaskStatus(task_id=task_id, status=outcome)


@router.post(
    "/v1/tasks/{task_id}/retry",
    response_model=TaskStatus,
    responses=errors(409),
    summary="Requeue a failed, dead or cancelled task (operator)",
)
async def retry_task(task_id: DbId, engine: Engine, principal: Operator) -> TaskStatus:
    if not await control.retry_task(engine, task_id):
        raise HTTPException(409, f"task {task_id} is unknown or not failed, dead or cancelled")
    await audit(engine, principal.name, "task.retry", f"task:{task_id}")
    return TaskStatus(task_id=task_id, status=states.QUEUED)
