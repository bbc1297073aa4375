"""Job engine throughput: reelhouse vs procrastinate vs the bare-SQL limit, same server, same run;
reelhouse on SQLite; claim latency during a prune.

    .venv/bin/python bench/jobs.py [--tasks N] [--workers 4 8] [--concurrency 4] [--quick] [--no-prune]

A round starts W worker processes, waits until all have registered, enqueues N no-op tasks in one
transaction and times from its commit until N tasks succeeded: start-up and enqueue are outside
the timing. Rounds alternate between the systems so other load on the machine hits all of them.
"limit" sends reelhouse's own claim and completion statements from a bare asyncpg loop per
process (claims for the free slots on one connection, completions batched on another, as the
worker does) with no engine around them: what the database allows for these statements.
"""

import argparse
import asyncio
import functools
import logging
import os
import platform
import secrets
import shlex
import shutil
import signal
import sqlite3
import statistics
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
from reelhouse.core.jobs import hotpath_postgres
from reelhouse.core.jobs.jobsql import refresh_jobs_sql
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.worker import Worker, WorkerOptions

ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
KIND = "bench_noop"
BACKENDS_SQL = (
    "SELECT pid FROM pg_stat_activity"  # the workers' sessions, not the poller's
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
log = functools.partial(print, file=sys.stderr, flush=True)  # progress; the report is stdout


def database_dsn(name: str, driver: str = "postgresql") -> str:
    return f"{driver}://{ADMIN_DSN.partition('://')[2].rpartition('/')[0]}/{name}"


# ---- worker processes: this file re-executed with --worker ----------------------------------
def engine_url(db: str) -> str:
    """A PostgreSQL database name, or an SQLite file path (ends in .db)."""
    return f"sqlite+aiosqlite:///{db}" if db.endswith(".db") else database_dsn(db, "postgresql+asyncpg")


async def reelhouse_worker(db: str, concurrency: int) -> None:
    async def noop(_ctx: object) -> None:
        return None

    engine = create_engine(engine_url(db))
    registry = TaskRegistry()
    registry.register(TaskKind(KIND, noop))
    # Idle poll as in the engine's multi-process tests (procrastinate is woken by NOTIFY instead).
    worker = Worker(engine, registry, WorkerOptions(concurrency=concurrency, poll_interval=0.1))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    try:
        await worker.run()
    finally:
        await engine.dispose()


async def limit_worker(db: str, concurrency: int) -> None:
    """The same claim and completion statements as the engine, from a bare asyncpg loop."""
    dsn = database_dsn(db)
    claims, completions = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    owner = f"limit-{os.getpid()}"
    await claims.execute(
        "INSERT INTO workers (id, hostname, pid, capabilities, kinds, current_task_ids, status, started_at,"
        " last_heartbeat) VALUES ($1, 'bench', $2, '[]', '[]', '[]', 'running', now(), now())",
        owner,
        os.getpid(),
    )
    stop = asyncio.Event()
    pending: list[tuple[int, int]] = []
    in_flight = 0
    work, freed = asyncio.Event(), asyncio.Event()  # completions waiting / slots given back
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: (stop.set(), freed.set()))

    async def complete_loop() -> None:
        nonlocal in_flight, pending
        while not stop.is_set() or pending:
            if not pending:
                work.clear()
                await work.wait()
                continue
            batch, pending = pending, []
            async with completions.transaction():
                ids = [task_id for task_id, _ in batch]
                await completions.execute(hotpath_postgres.LOCK_JOBS_OF_TASKS, ids)
                rows = await completions.fetch(
                    hotpath_postgres.COMPLETE, ids, [fence for _, fence in batch], [None] * len(batch)
                )
                await completions.execute(refresh_jobs_sql("postgresql"), sorted({row[1] for row in rows}))
            in_flight -= len(batch)
            freed.set()

    completer = asyncio.create_task(complete_loop())
    while not stop.is_set():
        free = concurrency - in_flight
        if free <= 0:  # every slot busy: wait for a completion, as the worker does
            freed.clear()
            await freed.wait()
            continue
        rows = await claims.fetch(hotpath_postgres.CLAIM, [KIND], [], free, owner, 30.0)
        in_flight += len(rows)
        pending.extend((row["id"], row["fence"]) for row in rows)
        work.set()
        if not rows:
            await asyncio.sleep(0.1)  # idle poll, as the worker's
    work.set()
    await completer
    await claims.close()
    await completions.close()


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
    worker: str = ""  # the --worker kind its processes run (default: name)
    sqlite: bool = False


async def reelhouse_system(db: str, tasks_per_job: int, name: str = "reelhouse") -> System:
    engine = create_engine(engine_url(db))
    await run_migrations(engine)
    queue = TaskQueue(engine)

    async def enqueue(n: int) -> None:
        async with engine.begin() as conn:  # one transaction: workers see all N at the commit
            for i in range(n):
                if i % tasks_per_job == 0:
                    job_id = await queue.create_job(conn, "bench", {})
                await queue.add_task(conn, job_id, KIND, {"i": i})

    sqlite = db.endswith(".db")
    return System(
        name,
        db,
        reset_sql="DELETE FROM task_attempts; DELETE FROM tasks; DELETE FROM jobs; DELETE FROM workers"
        if sqlite
        else "TRUNCATE task_attempts, tasks, jobs, workers RESTART IDENTITY CASCADE",
        ready_sql="SELECT count(*) FROM workers WHERE status = 'running'",
        done_sql="SELECT count(*) FROM tasks WHERE status = 'succeeded'",
        enqueue=enqueue,
        close=engine.dispose,
        worker="limit" if name == "limit" else "reelhouse",
        sqlite=sqlite,
    )


async def procrastinate_system(db: str) -> System:
    app, noop = procrastinate_app(db)
    await app.open_async()
    await app.schema_manager.apply_schema_async()

    async def enqueue(n: int) -> None:  # a single INSERT statement: all N rows commit together
        await noop.batch_defer_async(*({"i": i} for i in range(n)))

    return System(
        "procrastinate",
        db,
        reset_sql="TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers,"
        " procrastinate_periodic_defers RESTART IDENTITY CASCADE",
        ready_sql="SELECT count(*) FROM procrastinate_workers",
        done_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        enqueue=enqueue,
        close=app.close_async,
    )


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


class SqlitePoll:
    """The driver's view of an SQLite database, shaped like the asyncpg calls it makes."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)

    async def execute(self, sql: str) -> None:
        self.db.executescript(sql)

    async def fetchval(self, sql: str) -> int:
        return self.db.execute(sql).fetchone()[0]

    async def fetch(self, _sql: str) -> list:
        return []  # no server backends to measure

    def terminate(self) -> None:
        self.db.close()


async def run_round(system: System, n: int, processes: int, concurrency: int) -> tuple[float, ...]:
    """Timed seconds, then the CPU seconds its workers and their PostgreSQL backends used."""
    poll = SqlitePoll(system.db) if system.sqlite else await asyncpg.connect(database_dsn(system.db))
    workers: list[tuple[subprocess.Popen, IO[str]]] = []
    try:
        await poll.execute(system.reset_sql)
        workers = [start_worker(system, concurrency) for _ in range(processes)]
        await wait_for_count(poll, system.ready_sql, processes, 60, workers, "workers to register")
        await system.enqueue(n)
        started = time.perf_counter()
        pids = [proc.pid for proc, _ in workers]
        backends = [r["pid"] for r in await poll.fetch(BACKENDS_SQL)]
        before = cpu_seconds(pids), cpu_seconds(backends, "postgres") if backends else {}
        await wait_for_count(poll, system.done_sql, n, max(120, n / 10), workers, f"{n} {system.name} tasks to finish")
        seconds = time.perf_counter() - started
        backends = [r["pid"] for r in await poll.fetch(BACKENDS_SQL)]
        after = cpu_seconds(pids), cpu_seconds(backends, "postgres") if backends else {}
        return (seconds, *(cpu_since(b, a) for b, a in zip(before, after, strict=True)))
    finally:
        poll.terminate()  # it holds no transaction: nothing to close gracefully
        stop_workers(workers)


def start_worker(system: System, concurrency: int) -> tuple[subprocess.Popen, IO[str]]:
    # A file, not a pipe: nobody reads it during the round and a full pipe would block a worker.
    stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the caller closes it with the worker
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        system.worker or system.name,
        "--db",
        system.db,
        "--concurrency",
        str(concurrency),
    ]
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


async def wait_for_count(
    poll: asyncpg.Connection | SqlitePoll,
    sql: str,
    target: int,
    timeout: float,
    workers: list[tuple[subprocess.Popen, IO[str]]],
    what: str,
) -> None:
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
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=source
    ).stdout.strip()
    rows = [
        ("Command", f"`{shlex.join(sys.orig_argv)}`, reelhouse {commit or 'from ' + source}"),
        (
            "Python / PostgreSQL server / procrastinate",
            f"{platform.python_version()} / {server_version} / {version('procrastinate')}",
        ),
        ("SQLAlchemy / asyncpg / psycopg", " / ".join(version(p) for p in ("sqlalchemy", "asyncpg", "psycopg"))),
        ("Machine", f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f} at start"),
        (
            "Tasks per round",
            f"{args.tasks} no-op, enqueued before timing starts: reelhouse `create_job` + "
            f"`add_task` in one transaction, {args.tasks_per_job} task(s) per job; "
            "procrastinate `Task.batch_defer_async` (one statement)",
        ),
        ("Concurrency", f"{args.concurrency} per worker process, the same for both systems"),
    ]
    return "\n".join(
        ["## Job engine throughput: reelhouse vs procrastinate vs the bare-SQL limit", "", "| | |", "|---|---|"]
        + [f"| {k} | {v} |" for k, v in rows]
    )


async def bench(args: argparse.Namespace) -> None:
    # SIGTERM cancels the run like Ctrl-C does, so the finally below still drops the databases.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    tag = secrets.token_hex(4)
    names = [f"rh_bench_{tag}", f"pc_bench_{tag}", f"lim_bench_{tag}"]
    scratch = tempfile.mkdtemp(prefix="rh-bench-")
    admin = await asyncpg.connect(ADMIN_DSN)
    systems: list[System] = []
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        systems.append(await reelhouse_system(names[0], args.tasks_per_job))
        systems.append(await procrastinate_system(names[1]))
        systems.append(await reelhouse_system(names[2], args.tasks_per_job, name="limit"))
        sqlite_system = await reelhouse_system(
            os.path.join(scratch, "bench.db"), args.tasks_per_job, "reelhouse-sqlite"
        )
        systems.append(sqlite_system)
        print(header(args, await admin.fetchval("SHOW server_version")) + "\n", flush=True)
        rows, sqlite_rows = [], []
        for processes in args.workers:
            rounds = {}
            for system in systems:
                rounds[system.name] = await run_round(system, args.tasks, processes, args.concurrency)
                log(f"{system.name}, {processes} x {args.concurrency}: {rounds[system.name][0]:.2f}s")
            (rh, rh_cpu, rh_pg), (pc, pc_cpu, pc_pg) = rounds["reelhouse"], rounds["procrastinate"]
            lim, lim_cpu, lim_pg = rounds["limit"]
            ms = 1000 / args.tasks  # CPU seconds per round -> ms per task
            rows.append(
                f"| {processes} x {args.concurrency} | {args.tasks / rh:.0f} ({rh:.1f}) "
                f"| {args.tasks / pc:.0f} ({pc:.1f}) | {args.tasks / lim:.0f} ({lim:.1f}) "
                f"| {pc / rh:.2f} | {100 * lim / rh:.0f} % "
                f"| {rh_cpu * ms:.2f} + {rh_pg * ms:.2f} | {pc_cpu * ms:.2f} + {pc_pg * ms:.2f} "
                f"| {lim_cpu * ms:.2f} + {lim_pg * ms:.2f} |"
            )
            sq, sq_cpu, _ = rounds["reelhouse-sqlite"]
            sqlite_rows.append(
                f"| {processes} x {args.concurrency} | {args.tasks / sq:.0f} ({sq:.1f}) | {sq_cpu * ms:.2f} |"
            )
        print(
            "| worker processes x concurrency | reelhouse tasks/s (s) | procrastinate tasks/s (s) "
            "| limit tasks/s (s) | reelhouse / procrastinate | reelhouse / limit "
            "| reelhouse CPU ms/task (workers + PostgreSQL) | procrastinate CPU ms/task | limit CPU ms/task |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        print("\n".join(rows))
        print(
            "\nreelhouse on SQLite (one file, WAL), same tasks and processes:\n\n"
            "| worker processes x concurrency | tasks/s (s) | worker CPU ms/task |\n|---|---:|---:|"
        )
        print("\n".join(sqlite_rows))
        if args.prune:
            print("\nClaim latency while a prune deletes 100,000 finished tasks (20,000 jobs):\n")
            print(
                "| backend | claims | p50 ms before / during | p95 ms before / during "
                "| max ms before / during | prune s |\n|---|---:|---:|---:|---:|---:|"
            )
            for system in (systems[0], sqlite_system):
                print(await prune_latency(system), flush=True)
    finally:
        for system in systems:
            await system.close()
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(scratch, ignore_errors=True)
        log(f"dropped {', '.join(names)}")


async def prune_latency(system: System) -> str:
    """Single-task claims (claim + complete) timed before and during a prune of 100k old tasks."""
    from datetime import timedelta

    from reelhouse.core.db.models import jobs, tasks
    from reelhouse.core.jobs.dbtime import database_time
    from reelhouse.core.jobs.retention import prune
    from reelhouse.core.jobs.settings import RetentionSettings

    engine = create_engine(engine_url(system.db))
    queue = TaskQueue(engine)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM task_attempts")
            await conn.exec_driver_sql("DELETE FROM tasks")
            await conn.exec_driver_sql("DELETE FROM jobs")
        then = await database_time(engine) - timedelta(days=30)
        old = {"kind": "old", "payload": {}, "created_at": then, "updated_at": then, "finished_at": then}
        async with engine.begin() as conn:
            await conn.execute(jobs.insert(), [{**old, "status": "completed"}] * 20_000)
            ids = (await conn.execute(jobs.select().with_only_columns(jobs.c.id))).scalars().all()
            rows = [{**old, "job_id": i, "status": "succeeded", "run_after": then} for i in ids for _ in range(5)]
            for start in range(0, len(rows), 10_000):
                await conn.execute(tasks.insert(), rows[start : start + 10_000])
            job_id = await queue.create_job(conn, "bench", {})
            for i in range(4000):
                await queue.add_task(conn, job_id, KIND, {"i": i})

        async def timed_claims(count: int | None, until: asyncio.Task | None = None) -> list[float]:
            took = []
            while (count is None or len(took) < count) and not (until is not None and until.done()):
                started = time.perf_counter()
                [run] = await queue.claim("bench", [KIND], 1, timedelta(seconds=30))
                await queue.succeed(run.lease, None)
                took.append((time.perf_counter() - started) * 1000)
            return took

        before = await timed_claims(300)
        conf = RetentionSettings(prune_batch=500)
        started = time.perf_counter()
        pruning = asyncio.create_task(prune(engine, conf))
        during = await timed_claims(None, until=pruning)
        report = await pruning
        seconds = time.perf_counter() - started
        assert report.tasks == 100_000, report

        def pct(values: list[float], q: float) -> float:
            return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]

        backend = "SQLite" if system.sqlite else "PostgreSQL"
        return (
            f"| {backend} | {len(before)} / {len(during)} | {pct(before, 50):.1f} / {pct(during, 50):.1f} "
            f"| {pct(before, 95):.1f} / {pct(during, 95):.1f} | {max(before):.1f} / {max(during):.1f} "
            f"| {seconds:.1f} |"
        )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="no-op tasks per round (default 5000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8], help="worker process counts (4 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per worker process")
    parser.add_argument(
        "--tasks-per-job",
        type=int,
        default=1,
        help="reelhouse tasks per job; each finishing task re-aggregates its job",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000 tasks")
    parser.add_argument("--no-prune", dest="prune", action="store_false", help="skip the prune latency rows")
    parser.add_argument("--worker", choices=["reelhouse", "procrastinate", "limit"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)  # --worker, --db: how a round starts one
    args = parser.parse_args()
    if args.worker:
        worker = {"reelhouse": reelhouse_worker, "procrastinate": procrastinate_worker, "limit": limit_worker}
        asyncio.run(worker[args.worker](args.db, args.concurrency))
    else:
        args.tasks = 1000 if args.quick else args.tasks
        try:
            asyncio.run(bench(args))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM, cleaned up
            sys.exit("interrupted")


if __name__ == "__main__":
    main()
