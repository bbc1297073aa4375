"""Job and task inspection and control: list, show, cancel, retry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from reelhouse.core.jobs import control, states
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import require_operator, require_viewer
from reelhouse.core.security.users import Principal

router = APIRouter(tags=["jobs"])


def _engine(request: Request):
    return request.app.state.runtime.engine


def _check_status(value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise HTTPException(400, f"unknown status {value!r}; expected one of {', '.join(allowed)}")


@router.get("/v1/jobs", summary="List jobs, newest first (keyset pagination with before_id)")
async def list_jobs(request: Request, status: str | None = None, kind: str | None = None,
                    limit: int = Query(50, ge=1, le=500), before_id: int | None = None,
                    _p: Principal = Depends(require_viewer)) -> list[dict[str, Any]]:
    _check_status(status, states.JOB_STATES)
    return await control.list_jobs(_engine(request), status=status, kind=kind, limit=limit,
                                   before_id=before_id)


@router.get("/v1/jobs/{job_id}", summary="A job with its tasks")
async def show_job(request: Request, job_id: int, _p: Principal = Depends(require_viewer)) -> dict[str, Any]:
    job = await control.get_job(_engine(request), job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, summary="Cancel a job's unfinished tasks")
async def cancel_job(request: Request, job_id: int, principal: Principal = Depends(require_operator)) -> dict:
    if await control.get_job(_engine(request), job_id) is None:
        raise HTTPException(404, f"job {job_id} not found")
    outcome = await control.cancel_job(_engine(request), job_id)
    await audit(_engine(request), principal.name, "job.cancel", f"job:{job_id}")
    return {"job_id": job_id, "tasks": [{"task_id": t, "status": s} for t, s in outcome]}


@router.post("/v1/jobs/{job_id}/retry", summary="Requeue a job's failed, dead or cancelled tasks")
async def retry_job(request: Request, job_id: int, principal: Principal = Depends(require_operator)) -> dict:
    if await control.get_job(_engine(request), job_id) is None:
        raise HTTPException(404, f"job {job_id} not found")
    retried = await control.retry_job(_engine(request), job_id)
    if not retried:
        raise HTTPException(409, f"job {job_id} has no failed, dead or cancelled task to retry")
    await audit(_engine(request), principal.name, "job.retry", f"job:{job_id}")
    return {"job_id": job_id, "retried_task_ids": retried}


@router.get("/v1/tasks", summary="List tasks (e.g. status=dead for the dead-letter list)")
async def list_tasks(request: Request, status: str | None = None, kind: str | None = None,
                     job_id: int | None = None, limit: int = Query(50, ge=1, le=500),
                     before_id: int | None = None, _p: Principal = Depends(require_viewer)) -> list[dict]:
    _check_status(status, states.TASK_STATES)
    return await control.list_tasks(_engine(request), status=status, kind=kind, job_id=job_id,
                                    limit=limit, before_id=before_id)


@router.get("/v1/tasks/{task_id}")
async def show_task(request: Request, task_id: int, _p: Principal = Depends(require_viewer)) -> dict:
    task = await control.get_task(_engine(request), task_id)
    if task is None:
        raise HTTPException(404, f"task {task_id} not found")
    return task


@router.post("/v1/tasks/{task_id}/cancel", status_code=202)
async def cancel_task(request: Request, task_id: int, principal: Principal = Depends(require_operator)) -> dict:
    outcome = await control.cancel_task(_engine(request), task_id)
    if outcome is None:
        raise HTTPException(409, f"task {task_id} is unknown or already finished")
    await audit(_engine(request), principal.name, "task.cancel", f"task:{task_id}")
    return {"task_id": task_id, "status": outcome}


@router.post("/v1/tasks/{task_id}/retry")
async def retry_task(request: Request, task_id: int, principal: Principal = Depends(require_operator)) -> dict:
    if not await control.retry_task(_engine(request), task_id):
        raise HTTPException(409, f"task {task_id} is unknown or not failed, dead or cancelled")
    await audit(_engine(request), principal.name, "task.retry", f"task:{task_id}")
    return {"task_id": task_id, "status": states.QUEUED}
