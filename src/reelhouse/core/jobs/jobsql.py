"""The job-status aggregate as one SQL statement for both backends (one pass over a job's
tasks), shared by the hot path and by every other transition, so the rule lives once.

Mirrors `states.job_status_from_tasks`: unfinished work wins over any outcome, then the worst
outcome wins. The caller has locked the job rows (in id order) and runs this as a new
statement, so on PostgreSQL its snapshot sees every task change committed before the lock.
"""

from __future__ import annotations

from functools import cache

from reelhouse.core.jobs.dbtime import SQLITE_FORMAT

NOW = {"postgresql": "now()", "sqlite": f"strftime('{SQLITE_FORMAT}', 'now')"}

_REFRESH = """
UPDATE jobs SET
    status = CASE
        WHEN a.running > 0 OR (a.queued > 0 AND a.finished > 0) THEN 'processing'
        WHEN a.queued > 0 THEN 'queued'
        WHEN a.failed > 0 THEN 'failed'
        WHEN a.dead > 0 THEN 'dead'
        WHEN a.cancelled > 0 THEN 'cancelled'
        ELSE 'completed' END,
    progress = CASE WHEN a.running + a.queued + a.failed + a.dead + a.cancelled = 0 THEN 1.0
        ELSE COALESCE(a.progress, 0.0) END,
    error = CASE WHEN a.failed + a.dead > 0 THEN (
        SELECT t.last_error FROM tasks t
        WHERE t.job_id = jobs.id AND t.status IN ('failed', 'dead')
        ORDER BY t.updated_at DESC LIMIT 1) END,
    result = CASE WHEN a.running + a.queued + a.failed + a.dead + a.cancelled = 0 THEN (
        SELECT t.result FROM tasks t
        WHERE t.job_id = jobs.id AND t.status = 'succeeded'
        ORDER BY t.id DESC LIMIT 1) ELSE jobs.result END,
    finished_at = CASE WHEN a.running + a.queued = 0 THEN {now} END,
    updated_at = {now}
FROM (
    SELECT job_id,
        SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running,
        SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END) AS queued,
        SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
        SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END) AS dead,
        SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
        SUM(CASE WHEN status IN ('succeeded', 'failed', 'dead', 'cancelled') THEN 1 ELSE 0 END) AS finished,
        AVG(progress) AS progress
    FROM tasks WHERE job_id {ids} GROUP BY job_id
) AS a
WHERE jobs.id = a.job_id
"""

LOCK_JOBS_POSTGRES = "SELECT id FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"


def id_list(dialect: str, count: int, first: int = 1) -> str:
    """`= ANY($n)` (one array parameter) on PostgreSQL, `IN (?, ...)` on SQLite."""
    if dialect == "postgresql":
        return f"= ANY(${first}::bigint[])"
    return "IN (" + ", ".join("?" * count) + ")"


@cache
def refresh_jobs_sql(dialect: str, count: int = 1) -> str:
    """Recompute status, progress, error and finish time of the given jobs. PostgreSQL takes
    the ids as one array (`$1`); SQLite as `count` positional parameters."""
    return _REFRESH.format(now=NOW[dialect], ids=id_list(dialect, count))
