"""`reelhouse encode SOURCE`: encode from the command line with a progress bar.

SOURCE is an http(s) URL (fetched with yt-dlp), a local file (stored first, like an upload),
or the key of an object already in storage. When no worker is serving the encode queue (no
`reelhouse serve` or `reelhouse worker` running), the command does the work itself and shows
its progress; with workers running it follows their progress (`--no-wait` only submits).
`--work` always encodes in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from reelhouse.core.jobs import control, states


class _SourceFirstGroup(TyperGroup):
    """`reelhouse encode SOURCE ...` runs the `run` command; `reelhouse encode profiles` is its
    own command. A group callback cannot take SOURCE itself: Click would read SOURCE as the
    name of a sub-command."""

    # `ctx` is typer's (vendored) click Context; typed loosely so either click's fits.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


encode_app = typer.Typer(
    cls=_SourceFirstGroup,
    no_args_is_help=True,
    help="Encode media to an HLS ladder or an MP4. "
    "'reelhouse encode SOURCE ...' is short for 'reelhouse encode run SOURCE ...'.",
)
console = Console()
err = Console(stderr=True)
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


@encode_app.command("run")
def encode(
    source: str = typer.Argument(..., help="http(s) URL, local file, or storage key"),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Profile name (default ENCODE_DEFAULT_PROFILE)"),
    output_prefix: str | None = typer.Option(None, "--output-prefix", help="Relative to ENCODE_OUTPUT_PREFIX"),
    preset: str | None = typer.Option(None, "--preset", help="x264 preset override, e.g. ultrafast"),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Show progress until the job ends, then its outputs (default)"
    ),
    work: bool = typer.Option(False, "--work", help="Run the encode tasks in this process even if workers run"),
    poll: float = typer.Option(0.5, "--poll", min=0.05, help="Seconds between progress polls"),
) -> None:
    """Submit an encode job."""
    from reelhouse.core.cli.common import load_settings  # imported late: reelhouse.cli loads this module

    settings = load_settings()
    settings.server.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.sqlite_path() is not None and not settings.sqlite_path().is_file():  # type: ignore[union-attr]
        err.print(
            f"[red]no database at {settings.sqlite_path()}[/red]; run `reelhouse migrate` (or `reelhouse serve`) "
            "first, or set DATABASE_URL / DATA_DIR / REELHOUSE_HOME"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    code = asyncio.run(_main(settings, source, profile, output_prefix, preset, wait or work, work, poll))
    if code:
        raise typer.Exit(code)


@encode_app.command("profiles")
def profiles() -> None:
    """List the built-in and custom encoding profiles."""
    from reelhouse.core.cli.common import load_settings, with_runtime
    from reelhouse.encode.profiles_store import list_profiles

    load_settings()
    listed = with_runtime(lambda runtime: list_profiles(runtime.engine))
    table = Table("name", "kind", "renditions", "built-in")
    for profile in listed:
        rungs = profile["definition"].get("renditions", [])
        table.add_row(
            profile["name"],
            profile["kind"],
            ", ".join(f"{r['name']} {r['width']}x{r['height']}" for r in rungs),
            "yes" if profile["builtin"] else "",
        )
    console.print(table)


async def _main(
    settings: Any,
    source: str,
    profile: str | None,
    output_prefix: str | None,
    preset: str | None,
    wait: bool,
    work: bool,
    poll: float,
) -> int:
    from reelhouse.core.cli.work import NO_WORKER_HINT, start_local_worker, stop_local_worker, workers_serving
    from reelhouse.core.db.migrate import pending_revisions
    from reelhouse.core.runtime import build_runtime
    from reelhouse.encode.pipeline import ENCODE_KINDS
    from reelhouse.encode.plugin import setup
    from reelhouse.encode.submit import SubmitError, submit_encode

    # Domains are not loaded through entry points here: this command needs only its own, and
    # loading them would register the encode kinds twice.
    runtime = build_runtime(settings, load_domains=False)
    domain = setup(runtime)
    service = domain.service
    worker_task = worker = None
    try:
        if await pending_revisions(runtime.engine):
            err.print("[red]the database needs migrating[/red]: run `reelhouse migrate`")
            return EXIT_BAD_INPUT
        try:
            request = await _request_for(service, source, profile, output_prefix, preset)
            submitted = await submit_encode(service, domain.pipeline, request, actor="cli")
        except SubmitError as exc:
            err.print(f"[red]{exc.message}[/red]")
            return EXIT_BAD_INPUT
        job_id = submitted["job_id"]
        console.print(
            f"job [bold]{job_id}[/bold] queued: {submitted['first_task']} "
            f"(profile {submitted['profile']}, output {submitted['output_prefix']}/)"
        )
        serving = await workers_serving(runtime, ENCODE_KINDS)
        if not wait:
            if not serving:
                err.print(f"[yellow]no worker is running, so the job waits: {NO_WORKER_HINT}[/yellow]")
            return 0
        if work or not serving:
            if not work:
                err.print("no worker is running: encoding in this process")
            worker, worker_task = start_local_worker(runtime, ENCODE_KINDS)
        job = await _follow(runtime.engine, job_id, poll, worker_task)
        return await _report(service, job)
    finally:
        await stop_local_worker(worker, worker_task)
        await runtime.aclose()


async def _request_for(
    service: Any, source: str, profile: str | None, output_prefix: str | None, preset: str | None
) -> Any:
    from reelhouse.core.storage import InvalidKey, ObjectNotFound
    from reelhouse.encode.submit import EncodeRequest, SubmitError

    common: dict[str, Any] = {"profile": profile, "output_prefix": output_prefix, "preset": preset}
    if source.startswith(("http://", "https://")):
        return EncodeRequest(source_kind="url", source_url=source, **common)
    path = Path(source).expanduser()
    if path.is_file():
        key = service.upload_key(path.name)
        with console.status(f"storing {path.name} ({path.stat().st_size} bytes) as {key}"):
            await service.storage().put(key, path)
        return EncodeRequest(source_kind="upload", source_key=key, source_name=path.name, **common)
    try:
        await service.storage().stat(source)
    except (ObjectNotFound, InvalidKey):
        raise SubmitError(2, f"{source!r} is not an http(s) URL, a local file, or a key in storage") from None
    return EncodeRequest(source_kind="key", source_key=source, **common)


def _describe(job: dict[str, Any]) -> tuple[str, float, str]:
    """(description, percent of the current step, detail) for the progress line."""
    current = next((t for t in job["tasks"] if t["status"] == states.RUNNING), None)
    if current is None:
        return f"{job['status']}", job["progress"] * 100, ""
    detail = current.get("progress_detail") or {}
    stage = detail.get("stage") or current["kind"].removeprefix("encode.")
    bits = []
    if detail.get("fps"):
        bits.append(f"{detail['fps']:.0f} fps")
    if detail.get("speed"):
        bits.append(f"{detail['speed']:.2f}x")
    if detail.get("eta_seconds") is not None:
        bits.append(f"ETA {detail['eta_seconds']:.0f}s")
    return stage, current["progress"] * 100, "  ".join(bits)


async def _follow(engine: Any, job_id: int, poll: float, worker_task: asyncio.Task[None] | None) -> dict[str, Any]:
    columns = (
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        line = bar.add_task("queued", total=100, detail="")
        while True:
            job = await control.get_job(engine, job_id)
            assert job is not None
            description, percent, detail = _describe(job)
            bar.update(line, description=description, completed=percent, detail=detail)
            if job["status"] in states.JOB_FINAL:
                if job["status"] == states.JOB_COMPLETED:
                    bar.update(line, description="done", completed=100, detail="")
                return job
            if worker_task is not None and worker_task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    worker_task.result()  # surfaces a crashed in-process worker
                raise RuntimeError("the in-process worker stopped before the job finished")
            await asyncio.sleep(poll)


async def _report(service: Any, job: dict[str, Any]) -> int:
    from reelhouse.encode.assets import get_asset

    if job["status"] != states.JOB_COMPLETED:
        err.print(f"[red]job {job['id']} {job['status']}[/red]" + (f": {job['error']}" if job.get("error") else ""))
        return EXIT_FAILED
    asset = await get_asset(service.engine, job_id=job["id"])
    assert asset is not None
    console.print(f"asset [bold]{asset['id']}[/bold]: {asset['master_key']}  (served at {asset['master_url']})")
    table = Table("rendition", "size", "bandwidth", "codecs", "key")
    for rung in asset["renditions"]:
        table.add_row(
            rung["name"],
            f"{rung['width']}x{rung['height']}",
            f"{rung['bandwidth'] // 1000} kb/s",
            rung["codecs"] or "",
            rung["key"],
        )
    console.print(table)
    return 0
