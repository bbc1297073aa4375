"""Task and job states, worker outcomes, and how a job's state follows from its tasks'.

The enums are `StrEnum`s, so a member compares equal to the string stored in the database;
the module-level names are the same members under their older names.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent error: not retried
    CANCELLED = "cancelled"
    DEAD = "dead"  # failed attempts or lost runs exhausted


class JobStatus(StrEnum):
    """WebEncode's names, so its runbook SQL (`status != 'completed'`) reads right."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"


class Outcome(StrEnum):
    """How one run ended, as the worker reports it (metrics label, trace attribute, history)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RELEASED = "released"  # given back on shutdown; the run does not count
    RATE_LIMITED = "rate_limited"
    CIRCUIT_OPEN = "circuit_open"
    LOST = "lost"  # the lease was gone (expired or taken over): nothing of this run was kept


QUEUED = TaskStatus.QUEUED
RUNNING = TaskStatus.RUNNING
SUCCEEDED = TaskStatus.SUCCEEDED
FAILED = TaskStatus.FAILED
CANCELLED = TaskStatus.CANCELLED
DEAD = TaskStatus.DEAD

TASK_STATES = tuple(TaskStatus)
TASK_FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DEAD})
TASK_UNSUCCESSFUL = frozenset({FAILED, CANCELLED, DEAD})  # the states a settle hook runs for

JOB_QUEUED = JobStatus.QUEUED
JOB_PROCESSING = JobStatus.PROCESSING
JOB_COMPLETED = JobStatus.COMPLETED
JOB_FAILED = JobStatus.FAILED
JOB_CANCELLED = JobStatus.CANCELLED
JOB_DEAD = JobStatus.DEAD
JOB_STATES = tuple(JobStatus)
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
