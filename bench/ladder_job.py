"""Benchmark: a whole encode *job* (submit, probe task, transcode task, upload to storage, asset
rows) against the bare ffmpeg ladder command on the same source, in the same run.

  (a) job path      `submit_encode` -> worker claims `encode.probe` then `encode.transcode` ->
                    ladder -> every file stored through Storage (filesystem backend, SQLite)
  (b) bare ffmpeg   the single-process ladder command from bench/ladder.py, no wrapper

Runs interleaved so a busy machine slows both alike, and prints the median wall and CPU time of
each and the ratio a/b: what the job machinery (polling, probing, progress writes, copying into
storage) costs on top of the encode itself.

    .venv/bin/python bench/ladder_job.py [--duration 20] [--preset veryfast] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ladder import Sample, bare_ffmpeg_ladder, cpu_seconds, make_source, timed  # bench/ladder.py
from reelhouse.config import Settings
from reelhouse.core.db import migrate
from reelhouse.core.jobs.control import get_job
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from reelhouse.encode.pipeline import ENCODE_KINDS
from reelhouse.encode.plugin import setup
from reelhouse.encode.submit import EncodeRequest, submit_encode

ENCODE_MIGRATIONS = str(Path(__file__).resolve().parents[1] / "src" / "reelhouse" / "encode" / "migrations")


def _with_encode_migrations() -> None:
    """Until `reelhouse.migrations` has the encode entry point, add the branch by hand."""
    original = migrate.version_locations

    def locations() -> list[str]:
        found = original()
        return found if ENCODE_MIGRATIONS in found else [*found, ENCODE_MIGRATIONS]

    migrate.version_locations = locations  # type: ignore[assignment]


async def run_job(source: Path, work: Path, preset: str) -> Sample:
    work.mkdir(parents=True)
    os.environ.update(
        DATA_DIR=str(work / "data"),
        DATABASE_URL=f"sqlite+aiosqlite:///{work / 'bench.db'}",
        STORAGE_BACKEND="fs",
        HW_ACCEL="none",
    )
    runtime = build_runtime(Settings(), load_domains=False)
    domain = setup(runtime)
    await migrate.run_migrations(runtime.engine)
    key = "bench/source.mp4"
    await domain.service.storage().put(key, source)
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.1, kinds=list(ENCODE_KINDS)))
    running = asyncio.create_task(worker.run())
    try:
        wall, cpu = time.perf_counter(), cpu_seconds()
        submitted = await submit_encode(
            domain.service,
            domain.pipeline,
            EncodeRequest(source_kind="key", source_key=key, preset=preset),
            actor="bench",
        )
        while (job := await get_job(runtime.engine, submitted["job_id"]))["status"] not in (
            "completed",
            "failed",
            "dead",
        ):
            await asyncio.sleep(0.05)
        sample = Sample(time.perf_counter() - wall, cpu_seconds() - cpu)
        if job["status"] != "completed":
            raise SystemExit(f"job failed: {job['error']}")
    finally:
        worker.request_stop()
        await running
        await domain.service.close_storage()
        await runtime.engine.dispose()
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="source length in seconds (1080p30)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset for every rung")
    parser.add_argument("--repeats", type=int, default=3, help="runs per strategy; the median is reported")
    options = parser.parse_args()
    _with_encode_migrations()

    with tempfile.TemporaryDirectory(prefix="bench-ladder-job-") as scratch:
        base = Path(scratch)
        source = base / "source.mp4"
        make_source(source, options.duration)
        jobs: list[Sample] = []
        bare: list[Sample] = []
        for attempt in range(options.repeats):
            jobs.append(asyncio.run(run_job(source, base / f"job-{attempt}", options.preset)))
            bare.append(timed(bare_ffmpeg_ladder, source, base / "bare", options.preset))

    def median(samples: list[Sample], field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples)

    print(
        f"HLS ladder job vs bare ffmpeg: {options.duration}s 1080p30 source, preset {options.preset}, "
        f"median of {options.repeats}"
    )
    print(f"{'strategy':<34}{'wall s':>10}{'cpu s':>10}")
    for name, samples in (("a encode job (API->worker->storage)", jobs), ("b bare ffmpeg, one process", bare)):
        print(f"{name:<34}{median(samples, 'wall'):>10.2f}{median(samples, 'cpu'):>10.2f}")
    print(
        f"ratio a/b wall {median(jobs, 'wall') / median(bare, 'wall'):.3f}   "
        f"cpu {median(jobs, 'cpu') / median(bare, 'cpu'):.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
