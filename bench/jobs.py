"""Job engine throughput: reelhouse vs procrastinate on the same PostgreSQL server, same run.

    .venv/bin/python bench/jobs.py [--tasks N] [--workers 4 8] [--concurrency 4] [--quick]

A round starts W worker processes, waits until all have registered, enqueues N no-op tasks in one
transaction and times from its commit until N tasks succeeded: start-up and enqueue are outside
the timing. Rounds alternate between the systems so other load on the machine hits both.
"""

import argparse
import asyncio
import functools
import logging
import os
import platform
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import IO

import asyncpg
import procrastinate

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.migrate import run_migrations
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.worker import Worker, WorkerOptions

ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
KIND = "bench_noop"
BACKENDS_SQL = ("SELECT pid FROM pg_stat_activity"  # the workers' sessions, not the poller's
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
log = functools.partial(print, file=sys.stderr, flush=True)  # progress; the report is stdout


def database_dsn(name: str, driver: str = "postgresql") -> str:
    return f"{driver}://{ADMIN_DSN.partition('://')[2].rpartition('/')[0]}/{name}"


# ---- worker processes: this file re-executed with --worker ----------------------------------
async def reelhouse_worker(db: str, concurrency: int) -> None:
    async def noop(_ctx: object) -> None:
        return None

    engine = create_engine(database_dsn(db, "postgresql+asyncpg"))
    registry = TaskRegistry()
    registry.register(TaskKind(KIND, noop))
    # Idle poll as in the engine's multi-process tests (procrastinate is woken by NOTIFY instead).
    worker = Worker(engine, registry, WorkerOptions(concurrency=concurrency, poll_interval=0.1))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    try:
        await worker.run()
    finally:
        await engine.dispose()


def procrastinate_app(db: str) -> tuple[procrastinate.App, procrastinate.tasks.Task]:
    # Silences a warning about apps defined in __main__: our workers register the task themselves.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database_dsn(db)))

    @app.task(name=KIND)
    async def noop(i: int) -> None:
        return None

    return app, noop


async def procrastinate_worker(db: str, concurrency: int) -> None:
    app, _noop = procrastinate_app(db)
    async with app.open_async():  # run_worker_async handles SIGTERM: finish running jobs, return
        await app.run_worker_async(concurrency=concurrency, wait=True)


# ---- the two systems as the driver sees them -------------------------------------------------
@dataclass
class System:
    name: str
    db: str
    reset_sql: str  # empties queue and worker tables so every round starts from the same state
    ready_sql: str  # number of registered workers
    done_sql: str  # number of tasks that succeeded
    enqueue: Callable[[int], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


async def reelhouse_system(db: str, tasks_per_job: int) -> System:
    engine = create_engine(database_dsn(db, "postgresql+asyncpg"))
    await run_migrations(engine)
    queue = TaskQueue(engine)

    async def enqueue(n: int) -> None:
        async with engine.begin() as conn:  # one transaction: workers see all N at the commit
            for i in range(n):
                if i % tasks_per_job == 0:
                    job_id = await queue.create_job(conn, "bench", {})
                await queue.add_task(conn, job_id, KIND, {"i": i})

    return System(
        "reelhouse", db, reset_sql="TRUNCATE tasks, jobs, workers RESTART IDENTITY CASCADE",
        ready_sql="SELECT count(*) FROM workers WHERE status = 'running'",
        done_sql="SELECT count(*) FROM tasks WHERE status = 'succeeded'",
        enqueue=enqueue, close=engine.dispose)


async def procrastinate_system(db: str) -> System:
    app, noop = procrastinate_app(db)
    await app.open_async()
    await app.schema_manager.apply_schema_async()

    async def enqueue(n: int) -> None:  # a single INSERT statement: all N rows commit together
        await noop.batch_defer_async(*({"i": i} for i in range(n)))

    return System(
        "procrastinate", db,
        reset_sql="TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers,"
                  " procrastinate_periodic_defers RESTART IDENTITY CASCADE",
        ready_sql="SELECT count(*) FROM procrastinate_workers",
        done_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        enqueue=enqueue, close=app.close_async)


# ---- one round -------------------------------------------------------------------------------
def cpu_seconds(pids: list[int], command: str | None = None) -> dict[int, float] | None:
    """User + system CPU per pid from /proc (Linux): it moves much less than wall time when other
    jobs share the machine. None if a pid is gone or is not `command` (PostgreSQL not local)."""
    result = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, _, tail = f.read().rpartition(")")
        except OSError:
            return None
        if command and head.partition("(")[2] != command:
            return None
        result[pid] = sum(map(int, tail.split()[11:13])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return result


def cpu_since(before: dict[int, float] | None, after: dict[int, float] | None) -> float:
    if before is None or after is None:
        return float("nan")
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())  # new pids count from 0


async def run_round(system: System, n: int, processes: int, concurrency: int) -> tuple[float, ...]:
    """Timed seconds, then the CPU seconds its workers and their PostgreSQL backends used."""
    poll = await asyncpg.connect(database_dsn(system.db))
    workers: list[tuple[subprocess.Popen, IO[str]]] = []
    try:
        await poll.execute(system.reset_sql)
        workers = [start_worker(system, concurrency) for _ in range(processes)]
        await wait_for_count(poll, system.ready_sql, processes, 60, workers, "workers to register")
        await system.enqueue(n)
        started = time.perf_counter()
        pids = [proc.pid for proc, _ in workers]
        backends = [r["pid"] for r in await poll.fetch(BACKENDS_SQL)]
        before = cpu_seconds(pids), cpu_seconds(backends, "postgres")
        await wait_for_count(poll, system.done_sql, n, max(120, n / 10), workers,
                             f"{n} {system.name} tasks to finish")
        seconds = time.perf_counter() - started
        backends = [r["pid"] for r in await poll.fetch(BACKENDS_SQL)]
        after = cpu_seconds(pids), cpu_seconds(backends, "postgres")
        return (seconds, *(cpu_since(b, a) for b, a in zip(before, after)))
    finally:
        poll.terminate()  # it holds no transaction: nothing to close gracefully
        stop_workers(workers)


def start_worker(system: System, concurrency: int) -> tuple[subprocess.Popen, IO[str]]:
    # A file, not a pipe: nobody reads it during the round and a full pipe would block a worker.
    stderr = tempfile.TemporaryFile(mode="w+")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", system.name,
           "--db", system.db, "--concurrency", str(concurrency)]
    # Own session: a Ctrl-C reaches only the driver, which then stops workers with SIGTERM.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    return proc, stderr


def stop_workers(workers: list[tuple[subprocess.Popen, IO[str]]]) -> None:
    """SIGTERM every worker and wait for it; raises if any exited uncleanly."""
    for proc, _ in workers:
        proc.send_signal(signal.SIGTERM)  # a no-op for a process that already exited
    problems = []
    for proc, stderr in workers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.seek(0)
        err, _ = stderr.read(), stderr.close()
        if proc.returncode != 0 or "Traceback" in err:
            problems.append(f"worker pid {proc.pid} exited {proc.returncode}:\n{err[-2000:]}")
    if problems:
        raise RuntimeError("\n".join(problems))


async def wait_for_count(poll: asyncpg.Connection, sql: str, target: int, timeout: float,
                         workers: list[tuple[subprocess.Popen, IO[str]]], what: str) -> None:
    deadline = time.monotonic() + timeout
    while await poll.fetchval(sql) < target:
        if any(proc.poll() is not None for proc, _ in workers):
            raise RuntimeError(f"a worker process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)  # the end-of-round resolution; rounds last seconds


# ---- the driver ------------------------------------------------------------------------------
def header(args: argparse.Namespace, server_version: str) -> str:
    source = os.path.dirname(sys.modules["reelhouse"].__file__)  # the code measured, -dirty if edited
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=source).stdout.strip()
    rows = [
        ("Command", f"`{shlex.join(sys.orig_argv)}`, reelhouse {commit or 'from ' + source}"),
        ("Python / PostgreSQL server / procrastinate",
         f"{platform.python_version()} / {server_version} / {version('procrastinate')}"),
        ("SQLAlchemy / asyncpg / psycopg",
         " / ".join(version(p) for p in ("sqlalchemy", "asyncpg", "psycopg"))),
        ("Machine", f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f} at start"),
        ("Tasks per round", f"{args.tasks} no-op, enqueued before timing starts: reelhouse `create_job` + "
                            f"`add_task` in one transaction, {args.tasks_per_job} task(s) per job; "
                            "procrastinate `Task.batch_defer_async` (one statement)"),
        ("Concurrency", f"{args.concurrency} per worker process, the same for both systems"),
    ]
    return "\n".join(["## Job engine throughput: reelhouse vs procrastinate", "", "| | |",
                      "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


async def bench(args: argparse.Namespace) -> None:
    # SIGTERM cancels the run like Ctrl-C does, so the finally below still drops the databases.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    tag = secrets.token_hex(4)
    names = [f"rh_bench_{tag}", f"pc_bench_{tag}"]
    admin = await asyncpg.connect(ADMIN_DSN)
    systems: list[System] = []
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        systems.append(await reelhouse_system(names[0], args.tasks_per_job))
        systems.append(await procrastinate_system(names[1]))
        print(header(args, await admin.fetchval("SHOW server_version")) + "\n", flush=True)
        rows = []
        for processes in args.workers:
            rounds = []
            for system in systems:
                rounds.append(await run_round(system, args.tasks, processes, args.concurrency))
                log(f"{system.name}, {processes} x {args.concurrency}: {rounds[-1][0]:.2f}s")
            (rh, rh_cpu, rh_pg), (pc, pc_cpu, pc_pg) = rounds
            ms = 1000 / args.tasks  # CPU seconds per round -> ms per task
            rows.append(f"| {processes} x {args.concurrency} | {args.tasks / rh:.0f} ({rh:.1f}) "
                        f"| {args.tasks / pc:.0f} ({pc:.1f}) | {pc / rh:.2f} | {rh_cpu * ms:.2f} + "
                        f"{rh_pg * ms:.2f} | {pc_cpu * ms:.2f} + {pc_pg * ms:.2f} |")
        print("| worker processes x concurrency | reelhouse tasks/s (s) | procrastinate tasks/s (s) "
              "| reelhouse / procrastinate | reelhouse CPU ms/task (workers + PostgreSQL) "
              "| procrastinate CPU ms/task (workers + PostgreSQL) |\n|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    finally:
        for system in systems:
            await system.close()
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        log(f"dropped {', '.join(names)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="no-op tasks per round (default 5000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8], help="worker process counts (4 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per worker process")
    parser.add_argument("--tasks-per-job", type=int, default=1,
                        help="reelhouse tasks per job; each finishing task re-aggregates its job")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000 tasks")
    parser.add_argument("--worker", choices=["reelhouse", "procrastinate"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)  # --worker, --db: how a round starts one
    args = parser.parse_args()
    if args.worker:
        worker = reelhouse_worker if args.worker == "reelhouse" else procrastinate_worker
        asyncio.run(worker(args.db, args.concurrency))
    else:
        args.tasks = 1000 if args.quick else args.tasks
        try:
            asyncio.run(bench(args))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM, cleaned up
            sys.exit("interrupted")


if __name__ == "__main__":
    main()
