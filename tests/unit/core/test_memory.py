"""GC tuning for serve/worker processes: threshold raised, start-up objects frozen, 0 = leave alone."""

from __future__ import annotations

import gc

import pytest

from reelhouse.core.memory import tune_garbage_collector


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_threshold_raised_and_startup_objects_frozen(restore_gc):
    tune_garbage_collector(12_345)
    assert gc.get_threshold()[0] == 12_345
    assert gc.get_freeze_count() > 1000  # the modules and objects of the running interpreter


def test_zero_leaves_python_settings(restore_gc):
    before = gc.get_threshold()
    tune_garbage_collector(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
