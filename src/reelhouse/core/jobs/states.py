"""Task and job states, and how a job's state follows from its tasks'."""

from __future__ import annotations

from collections.abc import Iterable

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"  # permanent error: not retried
CANCELLED = "cancelled"
DEAD = "dead"  # retries exhausted

TASK_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, DEAD)
TASK_FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DEAD})

# Job states use WebEncode's names so its runbook SQL (`status != 'completed'`) reads right.
JOB_QUEUED = "queued"
JOB_PROCESSING = "processing"
JOB_COMPLETED = "completed"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_DEAD = "dead"
JOB_STATES = (JOB_QUEUED, JOB_PROCESSING, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED, JOB_DEAD)
JOB_FINAL = frozenset({JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED, JOB_DEAD})


def job_status_from_tasks(statuses: Iterable[str]) -> str:
    """Aggregate: unfinished work wins over any outcome, then the worst outcome wins."""
    seen = set(statuses)
    if not seen:
        return JOB_QUEUED
    if RUNNING in seen or (QUEUED in seen and seen & {SUCCEEDED, FAILED, DEAD, CANCELLED}):
        return JOB_PROCESSING
    if QUEUED in seen:
        return JOB_QUEUED
    if FAILED in seen:
        return JOB_FAILED
    if DEAD in seen:
        return JOB_DEAD
    if CANCELLED in seen:
        return JOB_CANCELLED
    return JOB_COMPLETED
