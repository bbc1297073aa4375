"""Segment-parallel encode across worker processes: the same 2-minute ladder on 1 and 2 workers,
each pinned to one core, side by side in one run; 3 workers on the 2 cores; the claim path's
per-task overhead.

    .venv/bin/python bench/distributed.py [--seconds 120] [--preset veryfast]

Each scenario gets a fresh PostgreSQL database (127.0.0.1:5432, override with BENCH_POSTGRES_URL)
and filesystem storage, then starts `reelhouse worker` processes under `taskset -c <core>` with
FFMPEG_THREADS=1, WORKER_CONCURRENCY=1 and ENCODE_SEGMENTED=always (so one worker takes the
segment-parallel path too; pieces = workers x ENCODE_SEGMENTS_PER_WORKER). The job (a 360p +
240p HLS ladder of a 640x360 25 fps clip with a keyframe every 2 s) is submitted through the
encode domain and timed from submit to completed; the stitched ladder is checked frame by frame with ffprobe.
Reported: wall time and speed-up over one worker (target: 2 workers >= 1.8x), how the pieces
spread over workers, every task's attempts (3 workers on 2 cores: pieces wait in the queue,
none fails), and the claim path's overhead per task: the gap between a worker finishing one
piece and starting its next (completion write + claim), and a piece's wall time beyond ffmpeg
(storage reads and writes, fenced bookkeeping).

    .venv/bin/python bench/distributed.py --dispatch-overhead-only [--dispatch-tasks 200]

Dispatch overhead (also at the end of a full run): no-op tasks (a bench-only kind, no ffmpeg)
through (a) a database-claim worker (`Worker`, the `reelhouse worker` loop) and (b) a NATS-mode
worker (`RemoteWorker`, no database credentials) behind a kernel (`KernelBridge`, the `serve`
side), each its own process, on a scratch PostgreSQL database per path (so each path's backends
and their CPU are its own) and real NATS on loopback (a stream prefix of its own, deleted
after). Two modes per path, alternating DB/NATS: `one at a time` (enqueue, wait for it, a
random pause, repeat: the latency an idle deployment adds to each task) and `burst` (N tasks in
one commit: throughput). Per task, from the database's own timestamps: created -> finished
(mean, p50, p95) split into created -> claimed (poll wait, dispatch, claim), claimed -> ran
(the handler's clock) and ran -> finished (outcome write; over NATS the event's way back), and
CPU per task of the path's processes and PostgreSQL backends (from /proc). Intervals are the
deployment defaults (JOB_POLL_INTERVAL, NATS_DISPATCH_INTERVAL) unless `--dispatch-poll S` sets
both to S, which leaves the transports' own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import event, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import reelhouse  # noqa: E402
from reelhouse.config import Settings  # noqa: E402
from reelhouse.core.db import migrate  # noqa: E402
from reelhouse.core.db.models import tasks, workers  # noqa: E402
from reelhouse.core.jobs import states  # noqa: E402
from reelhouse.core.runtime import build_runtime  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET = 1.8
FPS = 25


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_source(path: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-g", str(2 * FPS),
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", str(path)],
        check=True,
    )  # fmt: skip


def profile(preset: str) -> dict:
    return {
        "name": "bench-ladder",
        "kind": "hls",
        "segment_seconds": 6,
        "renditions": [
            {"name": "360p", "width": 640, "height": 360, "video_bitrate": "800k", "preset": preset},
            {"name": "240p", "width": 426, "height": 240, "video_bitrate": "400k", "preset": preset},
        ],
    }


async def fresh_database() -> tuple[str, str]:
    name = f"rh_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = ADMIN_DSN.rsplit("/", 1)[0]
    return name, f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://")


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def frame_count(playlist: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "json", str(playlist)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(json.loads(out)["streams"][0]["nb_read_packets"])


async def scenario(label: str, cores: list[int], source: Path, seconds: int, preset: str, work: Path) -> dict:
    db_name, url = await fresh_database()
    data = work / label / "data"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATA_DIR": str(data),
        "STORAGE_BACKEND": "fs",
        "HW_ACCEL": "none",
        "FFMPEG_THREADS": "1",
        "WORKER_CONCURRENCY": "1",
        "ENCODE_SEGMENTED": "always",
        "JOB_POLL_INTERVAL": "0.2",
        "MASTER_ENCRYPTION_KEY": "bench-master-key-0123456789abcdef0123",
        "LOG_LEVEL": "warning",
    }
    os.environ.update({k: v for k, v in env.items() if k != "PATH"})
    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    from reelhouse.encode.plugin import setup

    domain = setup(runtime)
    procs = []
    try:
        await migrate.run_migrations(runtime.engine)
        from reelhouse.encode.profiles_store import create_profile
        from reelhouse.encode.submit import EncodeRequest, submit_encode

        service, pipeline = domain.service, domain.pipeline
        await service.storage().put("inputs/source.mp4", source)
        await create_profile(runtime.engine, profile(preset), "bench")
        reelhouse = str(Path(sys.executable).parent / "reelhouse")
        for number, core in enumerate(cores):
            logf = (work / label / f"worker-{number}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    ["taskset", "-c", str(core), reelhouse, "worker"],
                    env={**env, "WORKER_ID": f"w{number}-core{core}"},
                    stdout=logf,
                    stderr=logf,
                )
            )
        deadline = time.monotonic() + 90
        while True:
            async with runtime.engine.connect() as conn:
                ready = len((await conn.execute(workers.select().where(workers.c.status == "running"))).all())
            if ready >= len(cores):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: only {ready} workers started")
            await asyncio.sleep(0.2)
        started = time.monotonic()
        created = await submit_encode(
            service,
            pipeline,
            EncodeRequest(source_kind="key", source_key="inputs/source.mp4", profile="bench-ladder"),
            actor="bench",
        )
        job_id = created["job_id"]
        from reelhouse.core.jobs import control

        while True:
            job = await control.get_job(runtime.engine, job_id)
            assert job is not None
            if job["status"] in ("completed", "failed", "dead", "cancelled"):
                break
            await asyncio.sleep(0.2)
        wall = time.monotonic() - started
        if job["status"] != "completed":
            raise RuntimeError(f"{label}: job {job['status']}: {job.get('error')}")
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(tasks.select().where(tasks.c.job_id == job_id).order_by(tasks.c.id))).all()
        from reelhouse.encode.assets import get_asset

        asset = await get_asset(runtime.engine, job_id=job_id)
        assert asset is not None
        local = getattr(service.storage(), "local_path")  # noqa: B009 - fs storage only
        frames = {r["name"]: frame_count(local(r["key"])) for r in asset["renditions"]}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await runtime.engine.dispose()
        await drop_database(db_name)
    pieces = [r for r in rows if r.kind == "encode.segment"]
    by_worker: dict[str, list] = {}
    for piece in pieces:
        by_worker.setdefault(piece.result["worker"], []).append(piece)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda r: r.started_at)
        gaps += [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(runs)]
    beyond = [(p.finished_at - p.started_at).total_seconds() - p.result["encode_seconds"] for p in pieces]
    return {
        "label": label,
        "workers": len(cores),
        "cores": sorted(set(cores)),
        "wall": wall,
        "pieces": len(pieces),
        "per_worker": {w: len(r) for w, r in sorted(by_worker.items())},
        "attempts": sorted({r.attempts for r in rows}),
        "tasks": len(rows),
        "failed": [r.kind for r in rows if r.status != "succeeded"],
        "frames": frames,
        "expected_frames": seconds * FPS,
        "claim_gap_median": statistics.median(gaps) if gaps else None,
        "beyond_ffmpeg_median": statistics.median(beyond),
        "ffmpeg_seconds": sum(p.result["encode_seconds"] for p in pieces),
    }


# ---- dispatch overhead: database claim path vs NATS dispatch -----------------------------------
NOOP_DB = "bench.noop"
NOOP_NATS = "bench.noop_remote"
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
BACKENDS_SQL = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
# Bounds: a phase that has not finished by then fails the run instead of hanging it.
PHASE_TIMEOUT = 300.0


async def noop(_ctx) -> dict:
    # The handler's wall clock: same host as PostgreSQL, so comparable with its timestamps.
    return {"ran_at": time.time()}


def noop_registry(role: str):
    from reelhouse.core.jobs.registry import TaskKind, TaskRegistry

    registry = TaskRegistry()
    if role == "db":
        registry.register(TaskKind(NOOP_DB, noop))
    else:  # the kernel and the NATS worker: the same kind, remote (the kernel never runs it)
        registry.register(TaskKind(NOOP_NATS, noop, remote=True))
    return registry


async def dispatch_role(role: str) -> None:
    """One process of the dispatch bench (this script re-executed with --dispatch-role)."""
    import signal

    from reelhouse.core.jobs.remote.settings import NatsSettings

    settings = Settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if role == "db":
        from reelhouse.core.db.engine import create_engine
        from reelhouse.core.jobs.worker import Worker, WorkerOptions

        engine = create_engine(settings.database.database_url)
        options = WorkerOptions(
            worker_id="bench-db-worker",
            concurrency=settings.jobs.worker_concurrency,
            poll_interval=settings.jobs.poll_interval.total_seconds(),
            kinds=[NOOP_DB],
        )
        worker = Worker(engine, noop_registry(role), options)
        loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
        await worker.run()
        await engine.dispose()
    elif role == "kernel":
        from datetime import timedelta

        from reelhouse.core.db.engine import create_engine
        from reelhouse.core.jobs.remote.kernel import KernelBridge

        engine = create_engine(settings.database.database_url)
        bridge = KernelBridge(
            engine,
            noop_registry(role),
            url=settings.jobs.nats_url,
            settings=settings.section(NatsSettings),
            lease=timedelta(seconds=settings.jobs.lease_seconds),
            stale_after=settings.jobs.worker_stale_after,
        )
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await bridge.run(stop)
        await engine.dispose()
    else:
        from reelhouse.core.jobs.remote.worker import RemoteWorker

        assert not os.environ.get("DATABASE_URL"), "a NATS-mode worker holds no database credentials"
        remote = RemoteWorker(
            noop_registry(role),
            url=settings.jobs.nats_url,
            settings=settings.section(NatsSettings),
            worker_id="bench-nats-worker",
            capabilities=["cpu"],
            concurrency=settings.jobs.worker_concurrency,
        )
        loop.add_signal_handler(signal.SIGTERM, remote.request_stop)
        await remote.run()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_tasks(engine, ids: list[int]) -> dict:
    async with engine.connect() as conn:
        rows = (await conn.execute(tasks.select().where(tasks.c.id.in_(ids)))).all()
    bad = [r.status for r in rows if r.status != "succeeded"]
    if bad or len(rows) != len(ids):
        raise RuntimeError(f"dispatch bench: {len(bad)} tasks not succeeded: {sorted(set(bad))}")
    total = [(r.finished_at - r.created_at).total_seconds() for r in rows]
    to_claim = [(r.started_at - r.created_at).total_seconds() for r in rows]
    # The handler's own clock stamp splits the rest: claim reply and start of the run, then
    # the outcome's way into the database (over NATS: an event the kernel applies).
    to_run = [r.result["ran_at"] - r.started_at.timestamp() for r in rows]
    after_run = [r.finished_at.timestamp() - r.result["ran_at"] for r in rows]
    span = (max(r.finished_at for r in rows) - min(r.created_at for r in rows)).total_seconds()
    return {
        "n": len(rows),
        "mean": statistics.fmean(total),
        "p50": percentile(total, 0.5),
        "p95": percentile(total, 0.95),
        "to_claim": statistics.median(to_claim),
        "to_run": statistics.median(to_run),
        "after_run": statistics.median(after_run),
        "throughput": len(rows) / span if span > 0 else float("inf"),
        "attempts": max(r.attempts for r in rows),
    }


async def wait_done(engine, ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        async with engine.connect() as conn:
            done = (
                await conn.execute(
                    select(tasks.c.id).where(
                        tasks.c.id.in_(sorted(pending)), tasks.c.status.in_(sorted(states.TASK_FINAL))
                    )
                )
            ).scalars()
            pending -= set(done)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"dispatch bench: {len(pending)} tasks unfinished after {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def one_at_a_time(queue, engine, kind: str, count: int, spread: float) -> list[int]:
    """Each task enqueued after the previous one finished and a random pause: enqueued right
    away, every task would arrive at the same point of the pollers' cycle (just after the poll
    that found the last one) and wait a whole interval instead of half of one on average."""
    pause = random.Random(15)
    ids = []
    for _ in range(count):
        await asyncio.sleep(pause.uniform(0, spread))
        ids.append((await queue.enqueue(kind, {})).task_id)
        await wait_done(engine, ids[-1:], 60)
    return ids


async def burst(queue, engine, kind: str, count: int, _spread: float) -> list[int]:
    async with engine.begin() as conn:  # one commit: every task is claimable at the same time
        ids = [(await queue.enqueue(kind, {}, conn=conn)).task_id for _ in range(count)]
    await wait_done(engine, ids, PHASE_TIMEOUT)
    return ids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes from /proc (Linux); a pid that is gone counts 0.
    CPU moves much less than wall time when other work shares the machine."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def backend_pids(engine, own: set[int]) -> list[int]:
    """The PostgreSQL backends serving this database, but the bench's own (its poller)."""
    async with engine.connect() as conn:
        pids = (await conn.execute(text(BACKENDS_SQL))).scalars().all()
    return [pid for pid in pids if pid not in own]


def track_own_backends(engine, own: set[int]) -> None:
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        own.add(cursor.fetchone()[0])
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)


async def dispatch_overhead(count: int, sequential: int, poll: float | None, work: Path) -> dict:
    """Run both paths in one run and return their timings (see the module docstring)."""
    from reelhouse.core.db.engine import create_engine
    from reelhouse.core.jobs.queue import TaskQueue
    from reelhouse.core.jobs.remote import bus

    # A database per path, so each path's PostgreSQL backends (and their CPU) are its own.
    databases = {"db": await fresh_database(), "nats": await fresh_database()}
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_DSN", "NATS_URL")}
    base_env.update(
        NATS_PREFIX=prefix,
        LOG_LEVEL="warning",
        DATA_DIR=str(work / "dispatch-data"),
        MASTER_ENCRYPTION_KEY="bench-master-key-0123456789abcdef0123",
    )
    if poll is not None:
        base_env.update(JOB_POLL_INTERVAL=f"{poll}s", NATS_DISPATCH_INTERVAL=f"{poll}s")
    roles = {
        "db": {"DATABASE_URL": databases["db"][1]},
        "kernel": {"DATABASE_URL": databases["nats"][1], "NATS_URL": NATS_URL},
        "nats": {"NATS_URL": NATS_URL},  # no database credentials at all
    }
    own: set[int] = set()
    engines = {path: create_engine(url) for path, (_name, url) in databases.items()}
    for engine in engines.values():
        track_own_backends(engine, own)
    procs: dict[str, subprocess.Popen] = {}
    results: dict[str, dict] = {}
    try:
        for engine in engines.values():
            await migrate.run_migrations(engine)
        for role, extra in roles.items():
            logf = (work / f"dispatch-{role}.log").open("wb")
            procs[role] = subprocess.Popen(
                [sys.executable, __file__, "--dispatch-role", role],
                env={**base_env, **extra},
                stdout=logf,
                stderr=logf,
            )
        deadline = time.monotonic() + 90
        for path, transport in (("db", "database"), ("nats", "nats")):
            while True:  # the database worker registered, the NATS worker mirrored by the kernel
                async with engines[path].connect() as conn:
                    query = workers.select().where(workers.c.status == "running", workers.c.transport == transport)
                    if (await conn.execute(query)).first() is not None:
                        break
                for role, proc in procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"dispatch bench: {role} exited {proc.returncode}, see its log")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dispatch bench: the {transport} worker did not come up")
                await asyncio.sleep(0.2)
        queues = {path: TaskQueue(engine) for path, engine in engines.items()}
        intervals = dispatch_intervals(poll)
        spread = max(intervals.values())  # a multiple of both intervals by default (1 s, 0.5 s)
        paths = {
            "database claim": ("db", NOOP_DB, [procs["db"].pid]),
            "NATS dispatch": ("nats", NOOP_NATS, [procs["kernel"].pid, procs["nats"].pid]),
        }
        # Warm-up (connections, consumers) outside the measurement, then DB and NATS alternating.
        for path, kind, _pids in paths.values():
            await one_at_a_time(queues[path], engines[path], kind, 3, 0)
        for mode, run, n in (("one at a time", one_at_a_time, sequential), ("burst", burst, count)):
            for label, (path, kind, pids) in paths.items():
                log(f"dispatch: {label}, {mode}, {n} tasks ...")
                engine = engines[path]
                backends = await backend_pids(engine, own)
                cpu_before = cpu_seconds(pids), cpu_seconds(backends)
                ids = await run(queues[path], engine, kind, n, spread)
                backends = sorted(set(backends) | set(await backend_pids(engine, own)))
                result = await timed_tasks(engine, ids)
                result["cpu"] = (cpu_seconds(pids) - cpu_before[0]) / n
                result["pg_cpu"] = (cpu_seconds(backends) - cpu_before[1]) / n
                results[f"{label}|{mode}"] = result
        for queue in queues.values():
            await queue.aclose()
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for engine in engines.values():
            await engine.dispose()
        for name, _url in databases.values():
            await drop_database(name)
        await bus.delete_all(NATS_URL, prefix)
    tracebacks = [role for role in procs if "Traceback" in (work / f"dispatch-{role}.log").read_text(errors="replace")]
    if tracebacks:
        raise RuntimeError(
            f"dispatch bench: tracebacks in {tracebacks}: "
            + (work / f"dispatch-{tracebacks[0]}.log").read_text()[-3000:]
        )
    return {
        "results": results,
        **intervals,
        "concurrency": Settings().jobs.worker_concurrency,
    }


def dispatch_intervals(poll: float | None) -> dict[str, float]:
    from reelhouse.core.jobs.remote.settings import NatsSettings

    settings = Settings()
    return {
        "poll": poll if poll is not None else settings.jobs.poll_interval.total_seconds(),
        "dispatch": poll if poll is not None else settings.section(NatsSettings).dispatch_interval.total_seconds(),
    }


def print_dispatch(report: dict) -> None:
    print(
        f"\nDispatch overhead: no-op tasks, PostgreSQL (a scratch database per path), NATS on 127.0.0.1, "
        f"worker concurrency {report['concurrency']}; database worker polls every {report['poll']:g} s, "
        f"kernel dispatches every {report['dispatch']:g} s; reelhouse from {Path(reelhouse.__file__).parent}\n"
    )
    print(
        "| path | mode | tasks | mean ms | p50 ms | p95 ms | created->claimed p50 ms "
        "| claimed->ran p50 ms | ran->finished p50 ms | tasks/s | CPU ms/task (processes + PostgreSQL) |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    results = report["results"]
    for key, r in results.items():
        label, mode = key.split("|")
        # One at a time, the rate is that of the pauses between tasks: left out.
        rate = f"{r['throughput']:.1f}" if mode == "burst" else "-"
        print(
            f"| {label} | {mode} | {r['n']} | {r['mean'] * 1000:.0f} | {r['p50'] * 1000:.0f} | {r['p95'] * 1000:.0f} "
            f"| {r['to_claim'] * 1000:.0f} | {r['to_run'] * 1000:.0f} | {r['after_run'] * 1000:.0f} | {rate} "
            f"| {r['cpu'] * 1000:.1f} + {r['pg_cpu'] * 1000:.1f} |"
        )
    print()
    for mode in ("one at a time", "burst"):
        db, nats = results[f"database claim|{mode}"], results[f"NATS dispatch|{mode}"]
        rates = f", throughput {nats['throughput'] / db['throughput']:.2f}x" if mode == "burst" else ""
        cpu = (nats["cpu"] + nats["pg_cpu"]) / (db["cpu"] + db["pg_cpu"])
        print(
            f"- NATS / DB, {mode}: mean {nats['mean'] / db['mean']:.2f}x, p50 {nats['p50'] / db['p50']:.2f}x, "
            f"p95 {nats['p95'] / db['p95']:.2f}x{rates}, CPU per task {cpu:.2f}x"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--dispatch-overhead-only", action="store_true", help="skip the ladder scenarios")
    parser.add_argument("--dispatch-tasks", type=int, default=200, help="tasks in the burst")
    parser.add_argument("--dispatch-sequential", type=int, default=50, help="tasks run one at a time")
    parser.add_argument("--dispatch-poll", type=float, default=None, help="JOB_POLL_INTERVAL = NATS_DISPATCH_INTERVAL")
    parser.add_argument("--dispatch-role", choices=["db", "kernel", "nats"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dispatch_role:
        await dispatch_role(args.dispatch_role)
        return
    if not 1 <= args.dispatch_tasks <= 5000 or not 1 <= args.dispatch_sequential <= 500:
        sys.exit("--dispatch-tasks must be 1..5000 and --dispatch-sequential 1..500")
    work = Path(tempfile.mkdtemp(prefix="rh-distributed-"))
    try:
        if not args.dispatch_overhead_only:
            saved = dict(os.environ)
            await ladder(args, work)
            os.environ.clear()  # the scenarios' settings (JOB_POLL_INTERVAL=0.2, ...) stay out of it
            os.environ.update(saved)
        print_dispatch(await dispatch_overhead(args.dispatch_tasks, args.dispatch_sequential, args.dispatch_poll, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def ladder(args: argparse.Namespace, work: Path) -> None:
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is required")
    source = work / "source.mp4"
    make_source(source, args.seconds)
    results = []
    for label, cores in (("1 worker", [0]), ("2 workers", [0, 1]), ("3 workers on 2 cores", [0, 1, 0])):
        log(f"{label} ...")
        results.append(await scenario(label.replace(" ", "-"), cores, source, args.seconds, args.preset, work))
        log(f"  {results[-1]['wall']:.1f} s")
    base = results[0]["wall"]
    print(f"Segment-parallel ladder (360p + 240p, {args.preset}, {args.seconds} s of 640x360 {FPS} fps), "
          f"workers pinned with taskset, FFMPEG_THREADS=1, PostgreSQL, fs storage\n")  # fmt: skip
    print("| workers | cores | wall s | speed-up vs 1 | pieces (per worker) | attempts | frames per rung |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        spread = ", ".join(f"{w}: {n}" for w, n in r["per_worker"].items())
        frames = ", ".join(f"{k} {v}/{r['expected_frames']}" for k, v in r["frames"].items())
        print(
            f"| {r['workers']} | {','.join(map(str, r['cores']))} | {r['wall']:.1f} | {base / r['wall']:.2f}x "
            f"| {r['pieces']} ({spread}) | {r['attempts']} | {frames} |"
        )
    two = base / results[1]["wall"]
    print(f"\n2 workers vs 1: {two:.2f}x (target >= {TARGET}x): {'met' if two >= TARGET else 'NOT met'}")
    print(f"3 workers on 2 cores: {results[2]['tasks']} tasks, failed: {results[2]['failed'] or 'none'}")
    for r in results:
        gap = r["claim_gap_median"]
        print(
            f"- {r['label']}: claim path between a worker's pieces (completion + next claim), median "
            f"{gap * 1000:.0f} ms"
            if gap is not None
            else f"- {r['label']}: one piece per worker",
            f"; piece wall beyond ffmpeg (storage + fenced writes), median {r['beyond_ffmpeg_median'] * 1000:.0f} ms"
            f"; ffmpeg total {r['ffmpeg_seconds']:.1f} s",
        )


if __name__ == "__main__":
    asyncio.run(main())
