"""The vault's configuration section. Secrets it needs are checked at start-up (`plugin.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from reelhouse.config import Duration, SettingsSection, from_env


class VaultSettings(SettingsSection):
    vault_enabled: Literal["auto", "true", "false"] = Field("auto", validation_alias=from_env("VAULT_ENABLED"))
    """auto: on when the master key and mail are configured; true: start-up fails without them."""
    app_url: str = Field("", validation_alias=from_env("APP_URL", "PUBLIC_BASE_URL"))
    """Base of the links in mails (LegacyVideo's APP_URL)."""
    app_name: str = Field("reelhouse vault", max_length=60, validation_alias=from_env("APP_NAME"))
    storage_prefix: str = Field(
        "vault", pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$", validation_alias=from_env("VAULT_PREFIX")
    )
    max_upload_bytes: int = Field(2 << 30, gt=0, validation_alias=from_env("VAULT_MAX_UPLOAD_BYTES"))
    segment_size: int = Field(1 << 20, ge=4096, le=16 << 20, validation_alias=from_env("VAULT_SEGMENT_BYTES"))
    rendition_profile: str = Field("mp4-720p", validation_alias=from_env("VAULT_RENDITION_PROFILE"))
    min_waiting_period: Duration = Field(timedelta(days=1), validation_alias=from_env("VAULT_MIN_WAITING_PERIOD"))
    default_waiting_period: Duration = Field(timedelta(days=7), validation_alias=from_env("VAULT_WAITING_PERIOD"))
    request_ttl: Duration = Field(timedelta(days=30), validation_alias=from_env("VAULT_REQUEST_TTL"))
    """A release request that has not reached its quorum by then expires."""
    veto_reminder_interval: Duration = Field(
        timedelta(days=1), validation_alias=from_env("VAULT_VETO_REMINDER_INTERVAL")
    )
    invitation_ttl: Duration = Field(timedelta(days=7), validation_alias=from_env("VAULT_INVITATION_TTL"))
    verifier_link_ttl: Duration = Field(timedelta(days=730), validation_alias=from_env("VAULT_VERIFIER_LINK_TTL"))
    recipient_link_ttl: Duration = Field(timedelta(days=30), validation_alias=from_env("VAULT_RECIPIENT_LINK_TTL"))
    view_session_ttl: Duration = Field(timedelta(hours=6), validation_alias=from_env("VAULT_VIEW_SESSION_TTL"))
    min_checkin_interval: Duration = Field(timedelta(days=7), validation_alias=from_env("VAULT_MIN_CHECKIN_INTERVAL"))
    checkin_grace: Duration = Field(timedelta(days=14), validation_alias=from_env("VAULT_CHECKIN_GRACE"))
    """After a missed check-in: reminders at 0, 1/2, 3/4 of this, then a release request."""
    tick_interval: Duration = Field(timedelta(seconds=60), validation_alias=from_env("VAULT_TICK_INTERVAL"))
    mail_max_attempts: int = Field(10, ge=1, le=100, validation_alias=from_env("VAULT_MAIL_MAX_ATTEMPTS"))
    auth_rate_limit: int = Field(10, ge=1, validation_alias=from_env("VAULT_AUTH_RATE_LIMIT"))
    """Link redemptions (invitation, veto, check-in, recipient links) per IP per minute."""
    upload_rate_limit: int = Field(5, ge=1, validation_alias=from_env("VAULT_UPLOAD_RATE_LIMIT"))
    """Uploads per user per hour."""
    release_rate_limit: int = Field(3, ge=1, validation_alias=from_env("VAULT_RELEASE_RATE_LIMIT"))
    """Release requests per verifier identity per hour."""
    admin_email: str = Field("", validation_alias=from_env("ADMIN_EMAIL"))
    """Copied on release requests and delivery failures when set."""

    def link(self, path: str, token: str) -> str:
        """A link for a mail; the token rides in the fragment, which browsers never send to servers
        (so it stays out of access logs and Referer headers)."""
        return f"{self.app_url.rstrip('/')}{path}#token={token}"
