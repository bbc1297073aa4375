"""System jobs stay out of the listings unless asked for: `GET /v1/jobs?system=true` and
`reelhouse jobs list --system`; a cancel through the API reports what happened."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import httpx
import typer
from typer.testing import CliRunner

from reelhouse.app import create_app
from reelhouse.config import Settings, reset_settings_cache
from reelhouse.core.cli.jobs import jobs_app
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.scheduler import PeriodicTask, Scheduler
from reelhouse.core.runtime import build_runtime

TOKEN = "listing-tests-admin-token-0123456789"


async def test_api_hides_system_jobs_unless_asked(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    await Scheduler(runtime.engine, [PeriodicTask("sweep", "sweep", every=timedelta(minutes=5))]).tick()
    queue = TaskQueue(runtime.engine)
    user_job = await queue.enqueue("encode")
    app = create_app(settings, runtime=runtime, background=False)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers) as c:
        default = (await c.get("/v1/jobs")).json()
        everything = (await c.get("/v1/jobs", params={"system": "true"})).json()
        assert [j["id"] for j in default] == [str(user_job.job_id)]
        assert sorted(j["kind"] for j in everything) == ["encode", "sweep"]
        cancelled = (await c.post(f"/v1/tasks/{user_job.task_id}/cancel")).json()
        assert cancelled == {"task_id": user_job.task_id, "status": "cancelled"}
        again = await c.post(f"/v1/tasks/{user_job.task_id}/cancel")
        assert again.status_code == 409  # already finished: nothing changed
    await runtime.aclose()


def test_cli_lists_system_jobs_only_with_the_flag(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    reset_settings_cache()

    async def seed() -> None:
        runtime = build_runtime(Settings(), load_domains=False)
        await Scheduler(runtime.engine, [PeriodicTask("sweep", "sweep.kind", every=timedelta(minutes=5))]).tick()
        await TaskQueue(runtime.engine).enqueue("user.kind")
        await runtime.aclose()

    asyncio.run(seed())
    root = typer.Typer()
    root.add_typer(jobs_app, name="jobs")

    @root.command()
    def version() -> None:
        typer.echo("0")

    handlers, level = list(logging.getLogger().handlers), logging.getLogger().level
    try:
        runner = CliRunner()
        plain = runner.invoke(root, ["jobs", "list"])
        with_system = runner.invoke(root, ["jobs", "list", "--system"])
    finally:
        logging.getLogger().handlers, logging.getLogger().level = handlers, level
        reset_settings_cache()
    assert plain.exit_code == 0 and with_system.exit_code == 0, plain.output + with_system.output
    assert "user.kind" in plain.output and "sweep.kind" not in plain.output
    assert "user.kind" in with_system.output and "sweep.kind" in with_system.output
