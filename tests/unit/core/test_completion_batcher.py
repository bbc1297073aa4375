"""Completions survive passing database errors for as long as the lease would: a run that
finished is written, not rerun; only a database that stays away past the limit gives it up."""

from __future__ import annotations

import asyncio

import pytest

from reelhouse.core.jobs.batching import CompletionBatcher


class FlakyFlush:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.written: dict[int, object] = {}

    async def __call__(self, results: dict[int, object]) -> set[int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("deadlock detected")
        self.written.update(results)
        return set(results)


async def test_a_run_of_failures_longer_than_a_few_retries_is_ridden_out():
    flush = FlakyFlush(failures=12)  # more than a fixed handful of retries
    batcher = CompletionBatcher(flush, give_up_after=30, max_delay=0.01)
    assert await asyncio.wait_for(batcher.submit(7, {"ok": True}), timeout=30) is True
    assert flush.written == {7: {"ok": True}} and flush.calls == 13


async def test_completions_arriving_during_a_write_go_out_together():
    flush = FlakyFlush(failures=1)
    batcher = CompletionBatcher(flush, give_up_after=30, max_delay=0.01)
    results = await asyncio.gather(*(batcher.submit(i, None) for i in range(5)))
    assert results == [True] * 5 and set(flush.written) == set(range(5)) and flush.calls <= 3


async def test_a_database_that_stays_away_is_given_up_after_the_limit():
    flush = FlakyFlush(failures=10**9)
    batcher = CompletionBatcher(flush, give_up_after=0.5, max_delay=0.05)
    with pytest.raises(RuntimeError, match="deadlock"):
        await asyncio.wait_for(batcher.submit(1, None), timeout=60)
    assert flush.calls > 1 and flush.written == {}  # retried, then gave up; nothing claimed written
