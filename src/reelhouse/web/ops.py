"""Operations pages (core-level): status with breakers, queue and charts; failed and dead
tasks with retry; workers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from reelhouse.core.http.deps import BeforeId, RuntimeDep
from reelhouse.core.http.status import engine_snapshot
from reelhouse.core.jobs import control, states
from reelhouse.core.jobs.workers_table import list_workers
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.web.history import recent_history
from reelhouse.web.shell import TEMPLATES, PageError, ViewerPage

PAGE_SIZE = 50
PROBLEM_STATES = (states.DEAD, states.FAILED, states.CANCELLED)

router = APIRouter(include_in_schema=False)


@router.get("/ops/status", response_class=HTMLResponse)
async def status_page(page: ViewerPage, runtime: RuntimeDep) -> HTMLResponse:
    snapshot = await engine_snapshot(runtime)
    history = await recent_history(runtime.engine)
    by_kind: dict[str, dict[str, int]] = {}
    for kind, state, count in snapshot["by_kind_state"]:
        by_kind.setdefault(kind, {})[state] = count
    return page.render(
        "ops/status.html",
        breakers=snapshot["breakers"],
        job_counts=snapshot["job_counts"],
        queue=snapshot["by_priority"],
        queue_depth=sum(count for _priority, count in snapshot["by_priority"]),
        by_kind=dict(sorted(by_kind.items())),
        task_states=states.TASK_STATES,
        history=history,
        threshold=runtime.settings.jobs.circuit_failure_threshold,
    )


@router.get("/ops/tasks", response_class=HTMLResponse)
async def tasks_page(
    page: ViewerPage, runtime: RuntimeDep, status: str = states.DEAD, before_id: BeforeId = None
) -> HTMLResponse:
    if status not in PROBLEM_STATES:
        raise PageError(400, f"unknown status {status!r}; expected one of {', '.join(PROBLEM_STATES)}")
    listed = await control.list_tasks(runtime.engine, status=status, limit=PAGE_SIZE + 1, before_id=before_id)
    rows = listed[:PAGE_SIZE]
    return page.render(
        "ops/tasks.html",
        tasks=rows,
        status=status,
        statuses=PROBLEM_STATES,
        before_id=before_id,
        next_before=rows[-1]["id"] if len(listed) > PAGE_SIZE else None,
    )


@router.get("/ops/workers", response_class=HTMLResponse)
async def workers_page(page: ViewerPage, runtime: RuntimeDep) -> HTMLResponse:
    workers = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    return page.render("ops/workers.html", workers=workers)


def ops_pages() -> PageSet:
    return PageSet(
        name="ops",
        title="Operations",
        router=router,
        templates=TEMPLATES / "ops",
        nav=(
            NavLink("Status", "/ops/status"),
            NavLink("Failed tasks", "/ops/tasks"),
            NavLink("Workers", "/ops/workers"),
        ),
    )
