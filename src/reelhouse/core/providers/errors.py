"""What an external service did, in terms every caller can act on.

Provider clients (Twitch Helix and OAuth, YouTube, yt-dlp's sites, SMTP...) raise these and
never the job engine's error classes: a task handler and an HTTP route need different answers
to the same failure. Each domain maps them to engine errors in one place
(`reelhouse.<domain>.errors`); HTTP maps them in one exception handler
(`core/http/errors.py`). Reasons never contain credentials.
"""

from __future__ import annotations

from datetime import datetime


class ProviderError(Exception):
    """Base class; `provider` names the service, `reason` says what happened, for people."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason


class Unavailable(ProviderError):
    """The service could not be reached or failed on its side (network error, 5xx) after the
    client's own retries: worth trying again later."""


class RateLimited(ProviderError):
    """The service asked us to wait (HTTP 429, an exhausted daily quota) until `retry_at`."""

    def __init__(self, provider: str, reason: str, retry_at: datetime) -> None:
        super().__init__(provider, reason)
        self.retry_at = retry_at


class Rejected(ProviderError):
    """The service refused the request as made (4xx): repeating it unchanged cannot succeed."""

    def __init__(self, provider: str, reason: str, status: int | None = None) -> None:
        super().__init__(provider, reason)
        self.status = status


class NotFound(Rejected):
    """What was asked for does not exist there (a deleted VOD, an unknown channel)."""


class AuthExpired(Rejected):
    """Credentials were refused and could not be renewed: a person must re-authorize."""
