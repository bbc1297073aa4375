"""Garbage-collector settings for a long-running reelhouse process.

CPython starts a generation-0 collection every 700 container allocations. Chat ingest allocates
several containers per message (tag dicts, events, rows), so at tens of thousands of messages a
second the collector ran hundreds of times a second and took about a fifth of the recorder's CPU
(bench/chat.py, docs/BENCHMARKS.md). A higher threshold runs it less often at the price of a few
MB of garbage held a little longer; `gc.freeze()` after start-up moves the objects every
process keeps (imported modules, the app) out of the collector's way.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("reelhouse.core.memory")


def tune_garbage_collector(gen0_threshold: int) -> None:
    """Call once the process is set up. `gen0_threshold` 0 keeps Python's own settings."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    log.debug("gc: generation-0 threshold %d, %d start-up objects frozen", gen0_threshold, gc.get_freeze_count())
