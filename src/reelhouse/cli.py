"""The `reelhouse` entry point: assembles core's command groups and the domains'.

Nothing imports this module but the console script; shared CLI helpers live in
`reelhouse.core.cli.common`.
"""

from __future__ import annotations

import asyncio
import signal
from importlib.metadata import EntryPoint, entry_points

import typer
import typer.main
from typer import _click as click
from typer.core import TyperGroup

from reelhouse.config import ConfigError
from reelhouse.core.cli.admin import admin_app
from reelhouse.core.cli.backup import backup_app
from reelhouse.core.cli.common import console, fail, load_settings, print_json, with_runtime
from reelhouse.core.cli.jobs import jobs_app, tasks_app


class RootCommands(TyperGroup):
    """Core's commands, and the domains' command groups (`reelhouse vod ...`, `reelhouse chat
    ...`) from the `reelhouse.cli` entry points. A domain's group is imported when it is the
    command run, or when help lists every group: each imports its domain's services (a few
    hundred milliseconds), which a command of another domain, or a worker, should not pay."""

    @staticmethod
    def domain_groups() -> dict[str, EntryPoint]:
        return {entry.name: entry for entry in entry_points(group="reelhouse.cli")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        core = super().list_commands(ctx)
        return [*core, *sorted(name for name in self.domain_groups() if name not in core)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        entry = self.domain_groups().get(cmd_name) if found is None else None
        if entry is not None:
            found = typer.main.get_group(entry.load())
            found.name = cmd_name
            self.add_command(found, cmd_name)
        return found


app = typer.Typer(help="reelhouse: self-hosted video operations.", no_args_is_help=True, cls=RootCommands)
app.add_typer(jobs_app, name="jobs")
app.add_typer(tasks_app, name="tasks")
app.add_typer(admin_app, name="admin")
app.add_typer(backup_app, name="backup")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Override HTTP_ADDR's host"),
    port: int | None = typer.Option(None, help="Override the port"),
) -> None:
    """API + web + scheduler + embedded worker in one process."""
    import uvicorn

    from reelhouse.app import create_app
    from reelhouse.core.memory import tune_garbage_collector

    settings = load_settings()
    bind_host, bind_port = settings.server.bind
    bind_host, bind_port = host or bind_host, port or bind_port
    settings.server.http_addr, settings.server.port = f"{bind_host}:{bind_port}", None  # for the start-up line
    try:
        application = create_app(settings)
    except ConfigError as exc:
        raise fail(f"configuration error: {exc}", 2) from None
    tune_garbage_collector(settings.server.gc_gen0_threshold)  # the process is set up: see memory.py
    uvicorn.run(
        application,
        host=bind_host,
        port=bind_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.jobs.shutdown_grace.total_seconds()),
    )


@app.command()
def worker(
    concurrency: int | None = typer.Option(None, help="Override WORKER_CONCURRENCY"),
    drain: bool = typer.Option(
        False, "--drain", help="Ask the running worker WORKER_ID to finish its tasks and take no more; wait for it"
    ),
    wait: float = typer.Option(3600.0, help="With --drain: seconds to wait for the worker to finish", min=0),
) -> None:
    """Run a worker alone until SIGTERM: claims tasks from the database, or, with NATS_URL and
    no DATABASE_URL, takes them from NATS JetStream (no database credentials needed)."""
    from reelhouse.config import ConfigError
    from reelhouse.core.jobs.remote.run import transport_of

    settings = load_settings()
    try:
        transport = transport_of(settings)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if drain:
        _drain_worker(settings, transport, wait)
        return
    if transport == "nats":
        from reelhouse.core.jobs.remote.run import run_nats_worker

        run_nats_worker(settings, concurrency)
        return
    from reelhouse.core.http.settings import HttpSettings
    from reelhouse.core.jobs.worker import Worker
    from reelhouse.core.media.hw import detect_capabilities
    from reelhouse.core.memory import tune_garbage_collector
    from reelhouse.core.telemetry.profiling import ProfilingSettings, check_profiling, start_profiling
    from reelhouse.core.telemetry.worker_metrics import start_metrics_listener

    async def run(runtime) -> None:
        from reelhouse.core.telemetry.tracing import flush_tracing, setup_tracing

        try:
            profiling = runtime.settings.section(ProfilingSettings)
            check_profiling(profiling)
        except ConfigError as exc:
            raise fail(f"configuration error: {exc}", 2) from None
        logging_conf = runtime.settings.logging
        setup_tracing(logging_conf.otel_exporter_otlp_endpoint, logging_conf.otel_trace_sample_rate)
        caps = await detect_capabilities(runtime.settings.media)
        options = runtime.worker_options(caps.capability_list())
        if concurrency:
            options.concurrency = concurrency
        instance = Worker(runtime.engine, runtime.registry, options)
        tune_garbage_collector(runtime.settings.server.gc_gen0_threshold)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, instance.request_stop)
        try:
            metrics_server = start_metrics_listener(runtime.settings.section(HttpSettings).metrics_addr)
            profiler = start_profiling(profiling, loop)
        except ConfigError as exc:
            raise fail(f"configuration error: {exc}", 2) from None
        try:
            await instance.run()
        finally:
            flush_tracing()
            if profiler:
                profiler.close()
            if metrics_server:
                metrics_server.shutdown()

    with_runtime(run)


def _drain_worker(settings, transport: str, wait: float) -> None:
    import time

    from reelhouse.core.jobs.remote.run import drain_over_nats, remote_worker_id

    if transport == "nats":
        worker_id = remote_worker_id()
        status = asyncio.run(drain_over_nats(settings, worker_id, wait))
    else:
        from sqlalchemy import select

        from reelhouse.core.db.models import workers
        from reelhouse.core.jobs.workers_table import request_drain

        worker_id = settings.jobs.worker_id

        async def run(runtime) -> str:
            if not await request_drain(runtime.engine, worker_id):
                return "unknown"
            deadline = time.monotonic() + wait
            status = "running"
            while time.monotonic() < deadline and status not in ("drained", "stopped"):
                await asyncio.sleep(0.5)
                async with runtime.engine.connect() as conn:
                    status = (
                        await conn.execute(select(workers.c.status).where(workers.c.id == worker_id))
                    ).scalar_one()
            return status

        status = with_runtime(run)
    print_json({"worker_id": worker_id, "status": status})
    if status not in ("drained", "stopped", "gone"):
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from reelhouse.core.db.migrate import pending_revisions

    async def run(runtime) -> list[str]:
        return await pending_revisions(runtime.engine)

    remaining = with_runtime(run, create=True)
    console.print("migrations applied" if not remaining else f"[red]still pending: {remaining}[/red]")


@app.command()
def status() -> None:
    """Print the same summary as GET /status."""
    from reelhouse.core.http.status import status_summary

    print_json(with_runtime(status_summary))


if __name__ == "__main__":
    app()
