"""Settings of sessions, login limits, password hashing (`settings.section(AuthSettings)`) and OIDC (`OidcSettings`).

The runbooks' variables (`ADMIN_TOKEN`, `MASTER_ENCRYPTION_KEY`, `RATE_LIMIT_*`) stay in
`config.SecuritySettings`; these are reelhouse's own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from reelhouse.config import CommaList, Duration, SettingsSection, from_env


class AuthSettings(SettingsSection):
    session_ttl: Duration = Field(timedelta(hours=12), validation_alias=from_env("SESSION_TTL"))
    """A login token (POST /auth/login) expires this long after it was last used (sliding)."""
    session_max_age: Duration = Field(timedelta(days=7), validation_alias=from_env("SESSION_MAX_AGE"))
    """...and this long after it was issued, however often it is used."""
    api_token_max_ttl: Duration | None = Field(None, validation_alias=from_env("API_TOKEN_MAX_TTL"))
    """Longest lifetime an API token may be created with; unset: tokens may be created without expiry."""
    login_limit_per_account: int = Field(10, ge=1, validation_alias=from_env("RATE_LIMIT_LOGINS_PER_ACCOUNT"))
    """Failed-or-not login attempts per account per RATE_LIMIT_WINDOW_SECONDS, from any address."""
    basic_auth_cache_ttl: Duration = Field(timedelta(seconds=60), validation_alias=from_env("BASIC_AUTH_CACHE_TTL"))
    """A verified HTTP Basic credential is trusted this long without another argon2 check."""
    password_hash_threads: int = Field(1, ge=1, le=64, validation_alias=from_env("PASSWORD_HASH_THREADS"))
    """Threads that run argon2 checks (~100 ms each, on four lanes), off the event loop at low priority.
    One by default: on a small machine more would take the cores the event loop needs."""
    password_hash_queue: int = Field(64, ge=1, validation_alias=from_env("PASSWORD_HASH_QUEUE"))
    """Password checks waiting for a thread beyond this are refused with 429 instead of queueing."""


class OidcSettings(SettingsSection):
    issuer_url: str = Field("", max_length=500, validation_alias=from_env("OIDC_ISSUER_URL"))
    """The provider's issuer (e.g. https://id.example.com/realms/main); empty: OIDC is off."""
    client_id: str = Field("", max_length=255, validation_alias=from_env("OIDC_CLIENT_ID"))
    """reelhouse's client id at the provider; also the audience of ID tokens."""
    client_secret: str = Field("", max_length=1024, validation_alias=from_env("OIDC_CLIENT_SECRET"))
    """The client's secret (confidential client); empty: a public client (PKCE only)."""
    scopes: str = Field("openid profile email", max_length=500, validation_alias=from_env("OIDC_SCOPES"))
    """Scopes asked for at login (space-separated; `openid` is always added)."""
    role_claim: str = Field("groups", max_length=200, validation_alias=from_env("OIDC_ROLE_CLAIM"))
    """The claim holding the account's groups/roles: a string or a list; dots walk into objects."""
    role_map: CommaList = Field(default_factory=list, validation_alias=from_env("OIDC_ROLE_MAP"))
    """`claim-value=role` pairs (role: viewer, operator, admin). Empty: the claim's values are
    taken as reelhouse role names."""
    default_role: Literal["none", "viewer", "operator", "admin"] = Field(
        "viewer", validation_alias=from_env("OIDC_DEFAULT_ROLE")
    )
    """Role of an account whose claim maps to no role; `none` refuses such accounts."""
    username_claim: str = Field("preferred_username", max_length=200, validation_alias=from_env("OIDC_USERNAME_CLAIM"))
    """Claim a new user's name is taken from (then `email`, then a name derived from `sub`)."""
    audience: CommaList = Field(default_factory=list, validation_alias=from_env("OIDC_AUDIENCE"))
    """Audiences a Bearer token may carry to be accepted by the API; empty: the client id."""
    redirect_url: str = Field("", max_length=1000, validation_alias=from_env("OIDC_REDIRECT_URL"))
    """The callback registered at the provider; empty: PUBLIC_BASE_URL (else the request's own
    origin) + /auth/oidc/callback."""
    display_name: str = Field("single sign-on", max_length=80, validation_alias=from_env("OIDC_DISPLAY_NAME"))
    """Shown on the login page's button: "Sign in with <name>"."""
    jwks_cache_ttl: Duration = Field(timedelta(hours=1), validation_alias=from_env("OIDC_JWKS_CACHE_TTL"))
    """How long the discovery document and the provider's keys are kept before a refetch."""
    jwks_min_refresh: Duration = Field(timedelta(seconds=10), validation_alias=from_env("OIDC_JWKS_MIN_REFRESH"))
    """Shortest time between two key-set fetches caused by tokens naming an unknown key id."""
    clock_skew: Duration = Field(timedelta(seconds=60), validation_alias=from_env("OIDC_CLOCK_SKEW"))
    """Leeway for exp/iat/nbf between the provider's clock and ours."""
    http_timeout: float = Field(10.0, gt=0, le=120, validation_alias=from_env("OIDC_HTTP_TIMEOUT"))
    """Seconds for each request to the provider."""

    @property
    def enabled(self) -> bool:
        return bool(self.issuer_url and self.client_id)


class AuditStreamSettings(SettingsSection):
    """The audit chain's copy on NATS JetStream (core/security/audit_stream.py), with NATS_URL."""

    stream: str = Field("AUDIT", pattern=r"^[A-Za-z0-9_-]{1,64}$", validation_alias=from_env("AUDIT_STREAM"))
    subject: str = Field("audit", pattern=r"^[A-Za-z0-9_-]{1,64}$", validation_alias=from_env("AUDIT_STREAM_SUBJECT"))
    max_age: Duration = Field(timedelta(days=90), validation_alias=from_env("AUDIT_STREAM_MAX_AGE"))
