"""One HTTP sending loop for every provider client: retries with backoff on network errors and
5xx, rate limits (429) waited out in the call when short and raised as `RateLimited` when not,
and one token refresh on 401. What a 4xx means is the client's to say; this loop returns the
response for it to read.

Helix, Twitch's token endpoint and YouTube each had a copy of this loop with small differences
(which statuses retried, whether the 429 wait was honoured, how often a 401 refreshed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from prometheus_client import Counter

from reelhouse.core.jobs.retry import backoff_delay
from reelhouse.core.providers.errors import RateLimited, Unavailable

log = logging.getLogger("reelhouse.providers")


class TokenSource(Protocol):
    """Where a client's bearer token comes from, and what to do when the service rejects it."""

    async def access_token(self) -> str: ...

    async def token_rejected(self, token: str) -> None:
        """The service answered 401 to `token`: refresh it (or forget it) before the retry."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # tries per logical request for network errors and 5xx
    backoff_base: float = 0.25  # seconds; doubled per failure, equal jitter (core/jobs/retry.py)
    backoff_cap: float = 2.0
    max_inline_wait: float = 0.0  # a 429 that asks for at most this long is waited out once
    default_retry_after: float = 1.0  # when a 429 carries no usable header


def provider_message(response: httpx.Response) -> str:
    """The human part of an error body (`message`, `error_description`, `error`, or Google's
    `error.message`), bounded so a misbehaving server cannot flood error columns."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
        for key in ("message", "error_description", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
    return response.reason_phrase


def parse_retry_at(headers: httpx.Headers, now: datetime, default_seconds: float = 1.0) -> datetime:
    """When a 429 may be retried: Twitch's `Ratelimit-Reset` (unix seconds) first, then the
    standard `Retry-After` (delta seconds or HTTP date)."""
    reset = headers.get("ratelimit-reset")
    if reset:
        try:
            return datetime.fromtimestamp(float(reset), UTC)
        except (ValueError, OverflowError):
            pass  # unusable header: fall back to Retry-After
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return now + timedelta(seconds=max(float(retry_after), 0.0))
        except ValueError:
            try:
                return parsedate_to_datetime(retry_after).astimezone(UTC)
            except (TypeError, ValueError):
                pass  # neither form: use the default
    return now + timedelta(seconds=default_seconds)


class ProviderHttp:
    """Sends requests to one provider through a shared `httpx.AsyncClient` (the caller owns it)."""

    def __init__(
        self,
        provider: str,
        http: httpx.AsyncClient,
        policy: RetryPolicy | None = None,
        *,
        calls: Counter | None = None,
    ) -> None:
        self.provider = provider
        self.http = http
        self.policy = policy or RetryPolicy()
        self._calls = calls  # labels (endpoint, status): per-endpoint call counts, "network_error"

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        token: TokenSource | None = None,
        retry: bool = True,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One logical request. `retry=False` sends once (a chunk whose partial commit the caller
        must check first): network errors raise `Unavailable` at once and 5xx are returned."""
        policy = self.policy
        failures = 0
        refreshed = waited = False
        while True:
            request_headers = dict(headers or {})
            bearer = await token.access_token() if token is not None else None
            if bearer is not None:
                request_headers["Authorization"] = f"Bearer {bearer}"
            try:
                response = await self.http.request(method, url, headers=request_headers, **kwargs)
            except httpx.TransportError as exc:
                self._count(what, "network_error")
                failures += 1
                cause = type(exc).__name__
                if not retry or failures >= policy.max_attempts:
                    # The exception text names the host only; request bodies (secrets) are not in it.
                    tries = f"{failures} attempts" if failures > 1 else "1 attempt"
                    raise Unavailable(self.provider, f"{what}: {cause} after {tries}") from None
                await self._backoff(what, cause, failures)
                continue
            status = response.status_code
            self._count(what, str(status))
            if status == 401 and token is not None and bearer is not None and not refreshed:
                refreshed = True
                await token.token_rejected(bearer)
                continue
            if status == 429:
                now = datetime.now(UTC)
                retry_at = parse_retry_at(response.headers, now, policy.default_retry_after)
                wait = (retry_at - now).total_seconds()
                if retry and not waited and wait <= policy.max_inline_wait:
                    waited = True
                    await asyncio.sleep(max(wait, 0.0))
                    continue
                raise RateLimited(self.provider, f"{what}: rate limited (HTTP 429)", retry_at)
            if status >= 500 and retry:
                failures += 1
                if failures >= policy.max_attempts:
                    raise Unavailable(self.provider, f"{what}: HTTP {status} after {failures} attempts")
                await self._backoff(what, f"HTTP {status}", failures)
                continue
            return response

    async def sleep_after_failure(self, what: str, cause: str, failures: int) -> None:
        """The policy's backoff, for callers with a retry loop of their own (chunked uploads)."""
        await self._backoff(what, cause, failures)

    async def _backoff(self, what: str, cause: str, failures: int) -> None:
        policy = self.policy
        delay = backoff_delay(failures, base=policy.backoff_base, cap=policy.backoff_cap).total_seconds()
        log.warning(
            "%s %s failed (%s); retry %d/%d in %.2fs",
            self.provider,
            what,
            cause,
            failures,
            policy.max_attempts - 1,
            delay,
            extra={"component": "providers"},
        )
        await asyncio.sleep(delay)

    def _count(self, what: str, status: str) -> None:
        if self._calls is not None:
            self._calls.labels(endpoint=what, status=status).inc()
