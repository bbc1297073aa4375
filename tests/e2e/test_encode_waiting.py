"""Seed 002's "Job Stuck in Pending" in the browser (issue 15): `reelhouse serve` with NATS and
HW_ACCEL=nvenc routes the transcode to a worker with `h264_nvenc`; with none registered, the
job page and the job list say "waiting for a worker with capability h264_nvenc", and once a
NATS-mode `reelhouse worker` with that capability (a fake one: WORKER_EXTRA_CAPABILITIES, the
encode itself is libx264 on this CPU) registers, the pages drop the text by themselves (htmx
refresh) and the job completes."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from reelhouse.core.jobs.remote import bus
from tests.e2e.conftest import sign_in
from tests.e2e.harness import ConsoleErrors, Server, run_async, run_server, screenshot_all
from tests.integration.nats.conftest import NATS_URL, require_nats
from tests.media_fixtures import make_clip

pytestmark = pytest.mark.slow
WAITING = "waiting for a worker with capability h264_nvenc"


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run_async(require_nats())
    prefix = f"e2e{uuid.uuid4().hex[:10]}"
    env = {
        "NATS_URL": NATS_URL,
        "NATS_PREFIX": prefix,
        "NATS_WORKER_TTL": "3s",
        "NATS_DISPATCH_INTERVAL": "200ms",
        "WORKER_STALE_AFTER": "6s",
        "HW_ACCEL": "nvenc",
        "ENCODE_SEGMENTED": "never",
        "STORAGE_BACKEND": "fs",
    }
    try:
        with run_server(tmp_path_factory.mktemp("e2e-nats"), env) as served:
            yield served
    finally:
        run_async(bus.delete_all(NATS_URL, prefix))


def start_nats_worker(server: Server, log_path: Path) -> subprocess.Popen[bytes]:
    """`reelhouse worker` in NATS mode: no database credentials; the same fs storage root."""
    env = {k: v for k, v in server.env.items() if k not in ("DATABASE_URL", "DB_DSN", "ADMIN_TOKEN")}
    env.update(
        WORKER_ID="e2e-fake-gpu",
        WORKER_EXTRA_CAPABILITIES="h264_nvenc",
        HW_ACCEL="none",  # the capability is declared, the encode is libx264
        WORKER_CONCURRENCY="1",
    )
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "reelhouse"), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def test_job_waits_for_a_capable_worker_and_proceeds_when_one_registers(browser, nats_server, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", duration=2.0)
    with nats_server.api("operator") as api:
        created = api.post("/v1/jobs", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]

    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=nats_server.url)
    context.set_default_timeout(20_000)
    worker = None
    try:
        page = context.new_page()
        errors = ConsoleErrors(page)
        sign_in(page, nats_server, "viewer")
        page.goto(f"/encode/jobs/{job_id}")
        # The probe runs on serve's own worker; the transcode then waits: no worker has h264_nvenc.
        expect(page.get_by_test_id("job-waiting-for")).to_have_text(WAITING, timeout=60_000)
        # The job is `processing` (its probe ran); the transcode is the task that waits.
        expect(page.get_by_role("row").filter(has_text="encode.transcode")).to_contain_text("queued")
        with nats_server.api() as api:
            assert api.get(f"/v1/jobs/{job_id}").json()["waiting_for"] == WAITING

        listing = context.new_page()
        listing.goto("/encode/jobs")
        row = listing.locator(f"tr[data-job-id='{job_id}']")
        expect(row.get_by_test_id("job-waiting-for")).to_have_text(f"— {WAITING}")
        screenshot_all(page, "encode-job-waiting")  # also axe-core, light and dark, phone width
        screenshot_all(listing, "encode-jobs-waiting")

        worker = start_nats_worker(nats_server, tmp_path / "worker.log")
        # Neither page is reloaded: their htmx refresh drops the text once the job proceeds.
        expect(page.get_by_test_id("job-waiting-for")).to_have_count(0, timeout=90_000)
        expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=120_000)
        expect(row).to_contain_text("completed", timeout=30_000)
        expect(row.get_by_test_id("job-waiting-for")).to_have_count(0)
        with nats_server.api() as api:
            job = api.get(f"/v1/jobs/{job_id}").json()
            registered = {w["id"]: w for w in api.get("/v1/workers").json()}
        assert job["waiting_for"] is None
        [transcode] = [t for t in job["tasks"] if t["kind"] == "encode.transcode"]
        assert transcode["status"] == "succeeded" and transcode["attempts"] == 1
        # The kernel handed it to the capable NATS worker (serve's own worker never runs it).
        assert f"task {transcode['id']} claimed by NATS worker e2e-fake-gpu" in nats_server.log_tail(2000)
        assert "h264_nvenc" in registered["e2e-fake-gpu"]["capabilities"]
        assert errors.unexpected() == []
    finally:
        context.close()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(30)
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
