"""`reelhouse jobs ...` and `reelhouse tasks ...`: inspect and control the job engine's work.

Arguments are checked like the HTTP API checks them (`GET /v1/jobs`): a status must be one of
the engine's, a limit 1-500, an id within the database's integer range.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.cli.common import console, fail, print_json, render_rows, with_runtime
from reelhouse.core.jobs import control, states

jobs_app = typer.Typer(help="Inspect and control jobs (what was asked for: archive a VOD, encode a file).")
tasks_app = typer.Typer(help="Inspect and control tasks (the units workers run; `--status dead`: the dead letters).")
jobs_app.info.no_args_is_help = tasks_app.info.no_args_is_help = True

T = TypeVar("T")
DB_INT_MAX = 2**63 - 1
Limit = typer.Option(50, min=1, max=500, help="At most this many, newest first (1-500)")
Kind = typer.Option(None, help="Only this kind, e.g. vod.archive or encode")


def _run_on(action: Callable[[AsyncEngine, int], Awaitable[T]], target_id: int) -> T:
    """`action(engine, id)` against the database, the id checked before any connection."""
    return with_runtime(lambda rt: action(rt.engine, target_id))


def _status(value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{value[:32]!r} is not one of {', '.join(allowed)}", param_hint="--status")
    return value


def _id(value: int, what: str) -> int:
    if not 1 <= value <= DB_INT_MAX:
        raise typer.BadParameter(f"{what} ids are 1-{DB_INT_MAX}")
    return value


@jobs_app.command("list")
def jobs_list(
    status: str | None = typer.Option(None, help=f"Only jobs in this state: {', '.join(states.JOB_STATES)}"),
    kind: str | None = Kind,
    limit: int = Limit,
    system: bool = typer.Option(False, "--system", help="Include system (housekeeping) jobs"),
) -> None:
    """Jobs, newest first."""
    _status(status, states.JOB_STATES)
    rows = with_runtime(lambda rt: control.list_jobs(rt.engine, status=status, kind=kind, limit=limit, system=system))
    render_rows(rows, ["id", "kind", "status", "progress", "created_at", "error"], "jobs")


@jobs_app.command("show")
def jobs_show(job_id: int = typer.Argument(..., help="Job id")) -> None:
    """A job with its tasks, as JSON (the same as GET /v1/jobs/{id})."""
    job = _run_on(control.get_job, _id(job_id, "job"))
    if job is None:
        raise fail(f"job {job_id} not found")
    print_json(job)


@jobs_app.command("retry")
def jobs_retry(job_id: int = typer.Argument(..., help="Job id")) -> None:
    """Requeue the job's failed, dead or cancelled tasks with a fresh attempt budget."""
    retried = _run_on(control.retry_job, _id(job_id, "job"))
    if not retried:
        raise fail(f"job {job_id}: nothing to retry (unknown, or no failed, dead or cancelled task)")
    console.print(f"requeued tasks {retried}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: int = typer.Argument(..., help="Job id")) -> None:
    """Cancel the job's unfinished tasks (a running one is stopped, its process too)."""
    outcome = _run_on(control.cancel_job, _id(job_id, "job"))
    if not outcome:
        raise fail(f"job {job_id}: nothing to cancel (unknown, or already finished)")
    console.print(", ".join(f"task {t}: {s}" for t, s in outcome))


@tasks_app.command("list")
def tasks_list(
    status: str | None = typer.Option(None, help=f"Only tasks in this state: {', '.join(states.TASK_STATES)}"),
    kind: str | None = Kind,
    job: int | None = typer.Option(None, help="Only the tasks of this job", min=1, max=DB_INT_MAX),
    limit: int = Limit,
) -> None:
    """Tasks, newest first."""
    _status(status, states.TASK_STATES)
    rows = with_runtime(lambda rt: control.list_tasks(rt.engine, status=status, kind=kind, job_id=job, limit=limit))
    render_rows(rows, ["id", "job_id", "kind", "status", "attempts", "progress", "last_error"], "tasks")


@tasks_app.command("show")
def tasks_show(task_id: int = typer.Argument(..., help="Task id")) -> None:
    """One task, as JSON (the same as GET /v1/tasks/{id})."""
    task = _run_on(control.get_task, _id(task_id, "task"))
    if task is None:
        raise fail(f"task {task_id} not found")
    print_json(task)


@tasks_app.command("retry")
def tasks_retry(task_id: int = typer.Argument(..., help="Task id")) -> None:
    """Requeue a failed, dead or cancelled task with a fresh attempt budget."""
    if not _run_on(control.retry_task, _id(task_id, "task")):
        raise fail(f"task {task_id} is unknown or not failed, dead or cancelled")
    console.print(f"task {task_id} requeued")


@tasks_app.command("cancel")
def tasks_cancel(task_id: int = typer.Argument(..., help="Task id")) -> None:
    """Cancel a queued task, or ask the worker running it to stop."""
    outcome = _run_on(control.cancel_task, _id(task_id, "task"))
    if outcome is None:
        raise fail(f"task {task_id} is unknown or already finished")
    console.print(f"task {task_id}: {outcome}")
