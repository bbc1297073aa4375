"""Backoff between attempts: exponential with jitter, so a burst of failures does not come
back as a synchronised burst of retries. The one backoff in reelhouse: the job engine, the
provider clients' HTTP loop, the IRC reconnect and the chat writer all use it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Jitter = Literal["equal", "full"]


def ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The exponential part before jitter: base, 2*base, 4*base... capped. The exponent is
    bounded so a client that retried for days cannot overflow the float."""
    return min(cap, base * 2.0 ** min(max(0, attempt - 1), 64))


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None, jitter: Jitter = "equal"
) -> timedelta:
    """Delay before attempt `attempt + 1` (attempt counts from 1).

    "Equal jitter" (the default): half the exponential delay is kept, the other half is random,
    so the delay always grows with the attempt number yet retries spread out. "Full jitter":
    uniform over [0, ceiling], for many clients that lost the same server at once (IRC
    reconnects), where spreading them matters more than a minimum wait.
    """
    top = ceiling(attempt, base=base, cap=cap)
    draw = (rng or random).uniform
    seconds = draw(0, top) if jitter == "full" else top / 2 + draw(0, top / 2)
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class BackoffPolicy:
    """A backoff's parameters, for loops that keep their own attempt count."""

    base: float = 1.0
    cap: float = 60.0
    jitter: Jitter = "equal"

    def ceiling(self, attempt: int) -> float:
        return ceiling(attempt, base=self.base, cap=self.cap)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return backoff_delay(attempt, base=self.base, cap=self.cap, rng=rng, jitter=self.jitter).total_seconds()
