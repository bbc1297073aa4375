"""Backoff between attempts: exponential with jitter, so a burst of failures does not come
back as a synchronised burst of retries."""

from __future__ import annotations

import random
from datetime import timedelta


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> timedelta:
    """Delay before attempt `attempt + 1` (attempt counts from 1).

    "Equal jitter": half the exponential delay is kept, the other half is random, so the delay
    always grows with the attempt number yet retries spread out.
    """
    exp = min(cap, base * (2 ** max(0, attempt - 1)))
    jitter = (rng or random).uniform(0, exp / 2)
    return timedelta(seconds=exp / 2 + jitter)
