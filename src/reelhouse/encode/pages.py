"""Encode pages: jobs (list, detail with live progress, new), outputs with a player, profiles.

Pages read through the same store functions as the API and act through the API itself
(the browser calls `/v1/...` with its session), so rules and error messages are the API's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from reelhouse.core.http.deps import BeforeId, DbId
from reelhouse.core.jobs import control, states
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.encode import assets as asset_store
from reelhouse.encode import profiles_store
from reelhouse.encode.service import JOB_KIND, EncodeService
from reelhouse.web.shell import AdminPage, OperatorPage, PageError, ViewerPage

PAGE_SIZE = 25
TEMPLATES = Path(__file__).parent / "templates"


def running_detail(job: dict[str, Any]) -> dict[str, Any] | None:
    """Stage, fps, speed and ETA of the job's running task, for the live progress line."""
    task = next((t for t in job["tasks"] if t["status"] == states.RUNNING), None)
    if task is None:
        return None
    detail = dict(task.get("progress_detail") or {})
    detail.setdefault("stage", task["kind"].removeprefix("encode."))
    detail["task_progress"] = task["progress"]
    return detail


def job_log(job: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(time, line, is_error) for what happened to the job and its tasks, oldest first."""
    events: list[tuple[str, str, bool]] = [(job["created_at"], "job created", False)]
    for task in sorted(job["tasks"], key=lambda t: t["id"]):
        name = f"{task['kind']} #{task['id']}"
        events.append((task["created_at"], f"{name} queued", False))
        if task["started_at"]:
            where = f" on {task['lease_owner']}" if task["lease_owner"] else ""
            events.append((task["started_at"], f"{name} started (attempt {task['attempts']}){where}", False))
        if task["last_error"]:
            at = task["finished_at"] or task["started_at"] or task["created_at"]
            events.append((at, f"{name}: {task['error_class'] or 'error'}: {task['last_error']}", True))
        if task["finished_at"]:
            events.append((task["finished_at"], f"{name} {task['status']}", task["status"] != states.SUCCEEDED))
    return sorted(events, key=lambda event: event[0])


def build_pages(service: EncodeService) -> PageSet:
    router = APIRouter(include_in_schema=False)
    engine = service.engine

    async def job_or_404(job_id: int) -> dict[str, Any]:
        job = await control.get_job(engine, job_id)
        if job is None or job["kind"] != JOB_KIND:
            raise PageError(404, f"job {job_id} not found")
        return job

    async def job_context(job: dict[str, Any]) -> dict[str, Any]:
        asset = await asset_store.get_asset(engine, job_id=job["id"])
        return {
            "job": job,
            "asset": asset,
            "live": running_detail(job),
            "final": job["status"] in states.JOB_FINAL,
            "log": job_log(job),
        }

    async def job_rows(status: str | None, before_id: int | None) -> dict[str, Any]:
        if status is not None and status not in states.JOB_STATES:
            raise PageError(400, f"unknown status {status!r}; expected one of {', '.join(states.JOB_STATES)}")
        listed = await asset_store.list_jobs_with_assets(
            engine, status=status, before_id=before_id, limit=PAGE_SIZE + 1
        )
        page_rows, more = listed[:PAGE_SIZE], len(listed) > PAGE_SIZE
        # "waiting for a worker with capability X" (the NATS kernel's mark) on open jobs only:
        # finished ones have no queued task, and the query stays off a page of old jobs.
        waiting = await control.waiting_for_jobs(
            engine, [job["id"] for job in page_rows if job["status"] not in states.JOB_FINAL]
        )
        for job in page_rows:
            job["waiting_for"] = waiting.get(job["id"])
        return {
            "jobs": page_rows,
            "next_before": page_rows[-1]["id"] if more else None,
            "status": status,
            "before_id": before_id,
            "any_open": any(job["status"] not in states.JOB_FINAL for job in page_rows),
            "statuses": states.JOB_STATES,
        }

    @router.get("/encode/jobs", response_class=HTMLResponse)
    async def jobs_page(page: ViewerPage, status: str | None = None, before_id: BeforeId = None) -> HTMLResponse:
        return page.render("encode/jobs.html", **await job_rows(status or None, before_id))

    @router.get("/encode/jobs/rows", response_class=HTMLResponse)
    async def jobs_rows(page: ViewerPage, status: str | None = None, before_id: BeforeId = None) -> HTMLResponse:
        return page.render("encode/jobs_table.html", **await job_rows(status or None, before_id))

    @router.get("/encode/jobs/new", response_class=HTMLResponse)
    async def new_job_page(page: OperatorPage) -> HTMLResponse:
        listed = await profiles_store.list_profiles(engine)
        return page.render(
            "encode/new_job.html",
            profiles=[p for p in listed if not p.get("error")],
            default_profile=service.settings.default_profile,
            max_upload=service.settings.max_upload_bytes,
        )

    @router.get("/encode/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(page: ViewerPage, job_id: DbId) -> HTMLResponse:
        return page.render("encode/job.html", **await job_context(await job_or_404(job_id)))

    @router.get("/encode/jobs/{job_id}/live", response_class=HTMLResponse)
    async def job_live(page: ViewerPage, job_id: DbId) -> HTMLResponse:
        return page.render("encode/job_live.html", **await job_context(await job_or_404(job_id)))

    @router.get("/encode/profiles", response_class=HTMLResponse)
    async def profiles_page(page: ViewerPage) -> HTMLResponse:
        return page.render("encode/profiles.html", profiles=await profiles_store.list_profiles(engine))

    @router.get("/encode/profiles/new", response_class=HTMLResponse)
    async def new_profile_page(page: AdminPage, base: str = Query("", max_length=64)) -> HTMLResponse:
        listed = await profiles_store.list_profiles(engine)
        builtins = [p for p in listed if p["builtin"]]
        chosen = next((p for p in builtins if p["name"] == base), builtins[0])
        definition = {**chosen["definition"], "name": f"{chosen['name']}-custom"}
        return page.render(
            "encode/profile_form.html",
            builtins=builtins,
            base=chosen["name"],
            name=None,
            definition=json.dumps(definition, indent=2),
        )

    @router.get("/encode/profiles/{name}/edit", response_class=HTMLResponse)
    async def edit_profile_page(page: AdminPage, name: str) -> HTMLResponse:
        try:
            profile = await profiles_store.get_profile(engine, name)
        except profiles_store.ProfileError as exc:
            raise PageError(exc.status, str(exc)) from None
        if profile["builtin"]:
            raise PageError(409, f"{name!r} is a built-in profile and cannot be changed")
        return page.render(
            "encode/profile_form.html",
            builtins=[],
            base=None,
            name=name,
            definition=json.dumps(profile["definition"], indent=2),
        )

    return PageSet(
        name="encode",
        title="Encode",
        router=router,
        templates=TEMPLATES,
        static=Path(__file__).parent / "static",
        nav=(
            NavLink("Jobs", "/encode/jobs"),
            NavLink("New encode", "/encode/jobs/new", role="operator"),
            NavLink("Profiles", "/encode/profiles"),
        ),
    )
