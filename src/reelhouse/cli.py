"""The `reelhouse` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from reelhouse.config import ConfigError, Settings, get_settings

app = typer.Typer(help="reelhouse: self-hosted video operations.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and control jobs.", no_args_is_help=True)
tasks_app = typer.Typer(help="Inspect and control tasks.", no_args_is_help=True)
admin_app = typer.Typer(help="Administration.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit log.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(tasks_app, name="tasks")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(audit_app, name="audit")
# Domains add their command groups (`reelhouse vod ...`, `reelhouse chat ...`) by entry point.
for _entry in entry_points(group="reelhouse.cli"):
    app.add_typer(_entry.load(), name=_entry.name)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def load_settings() -> Settings:
    try:
        settings = get_settings()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    from reelhouse.core.telemetry.logging import setup_logging

    sec, store = settings.security, settings.storage
    setup_logging(settings.logging.log_level, settings.logging.log_format,
                  secrets=[sec.admin_token, sec.master_encryption_key, store.s3_secret_access_key])
    return settings


def with_runtime(action: Callable[[Any], Awaitable[T]], migrate: bool = True) -> T:
    """Run `action(runtime)` against a migrated database, then close the engine."""
    from reelhouse.core.db.migrate import run_migrations
    from reelhouse.core.runtime import build_runtime

    settings = load_settings()
    settings.server.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> T:
        runtime = build_runtime(settings)
        try:
            if migrate:
                await run_migrations(runtime.engine)
            return await action(runtime)
        finally:
            await runtime.engine.dispose()

    return asyncio.run(main())


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@app.command()
def serve(host: Optional[str] = typer.Option(None, help="Override HTTP_ADDR's host"),
          port: Optional[int] = typer.Option(None, help="Override the port")) -> None:
    """API + web + scheduler + embedded worker in one process."""
    import uvicorn

    from reelhouse.app import create_app
    from reelhouse.core.memory import tune_garbage_collector

    settings = load_settings()
    bind_host, bind_port = settings.server.bind
    application = create_app(settings)
    tune_garbage_collector(settings.server.gc_gen0_threshold)  # the process is set up: see memory.py
    uvicorn.run(application, host=host or bind_host, port=port or bind_port,
                log_config=None, timeout_graceful_shutdown=int(settings.jobs.shutdown_grace.total_seconds()))


@app.command()
def worker(concurrency: Optional[int] = typer.Option(None, help="Override WORKER_CONCURRENCY")) -> None:
    """Run a worker alone: claims tasks from the database until SIGTERM."""
    from reelhouse.app import worker_options
    from reelhouse.core.jobs.worker import Worker
    from reelhouse.core.memory import tune_garbage_collector
    from reelhouse.core.media.hw import detect_capabilities

    async def run(runtime) -> None:
        caps = await detect_capabilities(runtime.settings.media)
        options = worker_options(runtime.settings, caps.capability_list())
        if concurrency:
            options.concurrency = concurrency
        instance = Worker(runtime.engine, runtime.registry, options)
        tune_garbage_collector(runtime.settings.server.gc_gen0_threshold)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, instance.request_stop)
        await instance.run()

    with_runtime(run)


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from reelhouse.core.db.migrate import pending_revisions

    async def run(runtime) -> list[str]:
        return await pending_revisions(runtime.engine)

    remaining = with_runtime(run)
    console.print("migrations applied" if not remaining else f"[red]still pending: {remaining}[/red]")


@app.command()
def status() -> None:
    """Print the same summary as GET /status."""
    from reelhouse.core.http.status import engine_snapshot

    async def run(runtime) -> dict:
        snap = await engine_snapshot(runtime)
        return {"jobs_by_status": snap["job_counts"],
                "queue_by_priority": [{"priority": p, "count": c} for p, c in snap["by_priority"]],
                "circuit_breakers": [b.__dict__ for b in snap["breakers"]], **snap["kv"]}

    print_json(with_runtime(run))


def _render_rows(rows: list[dict], columns: list[str], title: str) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row.get(c) if row.get(c) is not None else "") for c in columns])
    console.print(table)


@jobs_app.command("list")
def jobs_list(status: Optional[str] = None, kind: Optional[str] = None, limit: int = 50) -> None:
    from reelhouse.core.jobs import control

    rows = with_runtime(lambda rt: control.list_jobs(rt.engine, status=status, kind=kind, limit=limit))
    _render_rows(rows, ["id", "kind", "status", "progress", "created_at", "error"], "jobs")


@jobs_app.command("show")
def jobs_show(job_id: int) -> None:
    from reelhouse.core.jobs import control

    job = with_runtime(lambda rt: control.get_job(rt.engine, job_id))
    if job is None:
        err.print(f"job {job_id} not found")
        raise typer.Exit(1)
    print_json(job)


@jobs_app.command("retry")
def jobs_retry(job_id: int) -> None:
    from reelhouse.core.jobs import control

    retried = with_runtime(lambda rt: control.retry_job(rt.engine, job_id))
    if not retried:
        err.print(f"job {job_id}: nothing to retry")
        raise typer.Exit(1)
    console.print(f"requeued tasks {retried}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: int) -> None:
    from reelhouse.core.jobs import control

    outcome = with_runtime(lambda rt: control.cancel_job(rt.engine, job_id))
    if not outcome:
        err.print(f"job {job_id}: nothing to cancel")
        raise typer.Exit(1)
    console.print(", ".join(f"task {t}: {s}" for t, s in outcome))


@tasks_app.command("list")
def tasks_list(status: Optional[str] = None, kind: Optional[str] = None,
               job: Optional[int] = None, limit: int = 50) -> None:
    from reelhouse.core.jobs import control

    rows = with_runtime(lambda rt: control.list_tasks(rt.engine, status=status, kind=kind,
                                                      job_id=job, limit=limit))
    _render_rows(rows, ["id", "job_id", "kind", "status", "attempts", "progress", "last_error"], "tasks")


@tasks_app.command("show")
def tasks_show(task_id: int) -> None:
    from reelhouse.core.jobs import control

    task = with_runtime(lambda rt: control.get_task(rt.engine, task_id))
    if task is None:
        err.print(f"task {task_id} not found")
        raise typer.Exit(1)
    print_json(task)


@tasks_app.command("retry")
def tasks_retry(task_id: int) -> None:
    from reelhouse.core.jobs import control

    if not with_runtime(lambda rt: control.retry_task(rt.engine, task_id)):
        err.print(f"task {task_id} is unknown or not failed, dead or cancelled")
        raise typer.Exit(1)
    console.print(f"task {task_id} requeued")


@tasks_app.command("cancel")
def tasks_cancel(task_id: int) -> None:
    from reelhouse.core.jobs import control

    outcome = with_runtime(lambda rt: control.cancel_task(rt.engine, task_id))
    if outcome is None:
        err.print(f"task {task_id} is unknown or already finished")
        raise typer.Exit(1)
    console.print(f"task {task_id}: {outcome}")


@admin_app.command("create-user")
def create_user(username: str, role: str = typer.Option("viewer", help="viewer | operator | admin"),
                password: Optional[str] = typer.Option(None, help="Read from stdin/prompt when omitted")) -> None:
    """Create a user; the password is prompted for (or read from stdin) so it stays out of shell history."""
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import UserError, create_user as create

    if password is None:
        password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else typer.prompt(
            "password", hide_input=True, confirmation_prompt=True)

    async def run(runtime) -> int:
        user_id = await create(runtime.engine, username, password, role)
        await append(runtime.engine, "cli", "user.create", f"user:{user_id}", {"role": role})
        return user_id

    try:
        user_id = with_runtime(run)
    except UserError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"created user {username} (id {user_id}, role {role})")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exits 1 and names the first bad row if it is broken."""
    from reelhouse.core.security.audit import verify

    result = with_runtime(lambda rt: verify(rt.engine))
    if result.ok:
        console.print(f"audit log intact: {result.rows_checked} rows verified")
        return
    err.print(f"audit log BROKEN at row id {result.bad_row_id}: {result.problem} "
              f"({result.rows_checked} rows before it verified)")
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
