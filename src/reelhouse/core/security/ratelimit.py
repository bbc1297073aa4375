"""Sliding-window rate limiter; logins use two, one keyed by client address, one by account."""

from __future__ import annotations

import time
from collections import deque


class SlidingWindowLimiter:
    def __init__(self, limit: int, window_seconds: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys  # bounds memory under a flood of distinct keys
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float | None = None) -> tuple[bool, float]:
        """Record an attempt; returns (allowed, seconds until the next attempt is allowed)."""
        now = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._evict(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False, hits[0] + self.window - now
        hits.append(now)
        return True, 0.0

    def peek(self, key: str, now: float | None = None) -> tuple[bool, float]:
        """Like `hit`, without recording an attempt (Basic auth: only failures count)."""
        now = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if not hits:
            return True, 0.0
        recent = [t for t in hits if t > now - self.window]
        if len(recent) >= self.limit:
            return False, recent[0] + self.window - now
        return True, 0.0

    def _evict(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:
            self._hits.clear()
