"""FastAPI dependencies that turn request credentials into a `Principal` and enforce roles.

Accepted credentials:
- `Authorization: Bearer <token>`: an API token or login session (`rh_...`), or the runbooks'
  `ADMIN_TOKEN` (also as `X-Admin-Token`); the web UI's `rh_session` cookie arrives here as a
  Bearer credential (`reelhouse.web.session.SessionCookieAuth`, which also checks its CSRF
  double-submit on changes);
- HTTP Basic with a user's password.

Logins and Basic share the limiter: attempts are counted per client address and, separately,
per account. A Basic credential that verified is trusted for `BASIC_AUTH_CACHE_TTL` (while the
user's password and lock state are unchanged) so a player sending Basic on every segment costs
one argon2 check, and successful Basic requests are never login attempts; failed ones are.

CSRF: a browser attaches Basic credentials (and cookies) to cross-site requests by itself, so a
state-changing request authenticated with Basic must come from our own origin: one whose
`Origin`/`Sec-Fetch-Site` names another site is refused. Cookie sessions are checked by the web
layer's double-submit token. Bearer tokens are never sent by a browser on its own and are not
affected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import ConfigError
from reelhouse.core.security.keys import MasterKeys
from reelhouse.core.security.oidc import OidcClient, OidcError
from reelhouse.core.security.passwords import PasswordHasherBusy, PasswordWorker
from reelhouse.core.security.ratelimit import SlidingWindowLimiter
from reelhouse.core.security.settings import AuthSettings, OidcSettings
from reelhouse.core.security.users import (
    Principal,
    SessionPolicy,
    authenticate_password,
    authenticate_token,
    oidc_user_role,
    password_fingerprint,
    provision_oidc_user,
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CREDENTIAL_LENGTH = 4096
_BASIC_CACHE_SIZE = 1024


def _bytes(text: str) -> bytes:
    # Header values arrive decoded as latin-1; any byte string compares without error.
    return text.encode("utf-8", "surrogateescape")


@dataclass
class _CachedBasic:
    principal: Principal
    fingerprint: tuple[str, bool]
    until: float


@dataclass
class AuthService:
    """Everything request authentication needs, built once per app."""

    engine: AsyncEngine
    admin_token: str
    keys: MasterKeys
    settings: AuthSettings
    ip_limiter: SlidingWindowLimiter | None
    account_limiter: SlidingWindowLimiter | None
    passwords: PasswordWorker
    trusted_origins: set[str] = field(default_factory=set)
    oidc: OidcClient | None = None  # OIDC_ISSUER_URL and OIDC_CLIENT_ID set
    _basic: OrderedDict[str, _CachedBasic] = field(default_factory=OrderedDict)

    @classmethod
    def from_runtime(cls, runtime: Any) -> AuthService:
        settings = runtime.settings
        sec = settings.security
        auth = settings.section(AuthSettings)
        window = sec.rate_limit_window_seconds
        origins = {o.rstrip("/") for o in settings.server.cors_allowed_origins if not o.startswith("*.")}
        if settings.server.public_base_url:
            parts = urlsplit(settings.server.public_base_url)
            origins.add(f"{parts.scheme}://{parts.netloc}")
        from reelhouse.core.security.audit import master_keys_of

        oidc_settings = settings.section(OidcSettings)
        try:
            oidc = OidcClient(oidc_settings) if oidc_settings.enabled else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            engine=runtime.engine,
            admin_token=sec.admin_token,
            keys=master_keys_of(runtime.engine) or MasterKeys.from_settings(settings),
            settings=auth,
            ip_limiter=SlidingWindowLimiter(sec.rate_limit_requests_per_ip, window) if sec.rate_limit_enabled else None,
            account_limiter=SlidingWindowLimiter(auth.login_limit_per_account, window)
            if sec.rate_limit_enabled
            else None,
            passwords=PasswordWorker(auth.password_hash_threads, auth.password_hash_queue),
            trusted_origins=origins,
            oidc=oidc,
        )

    @property
    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(self.settings.session_ttl, self.settings.session_max_age)

    # ---- the login limiter ---------------------------------------------------------------------
    def check_login_allowed(self, ip: str, username: str, *, record: bool) -> None:
        """429 when the address or the account is over its limit; `record` counts this attempt."""
        for limiter, key in ((self.ip_limiter, f"ip|{ip}"), (self.account_limiter, f"user|{username.lower()[:120]}")):
            if limiter is None:
                continue
            allowed, wait = limiter.hit(key) if record else limiter.peek(key)
            if not allowed:
                retry = int(wait) + 1
                raise HTTPException(
                    429, f"too many login attempts; retry in {retry}s", headers={"Retry-After": str(retry)}
                )

    def record_failure(self, ip: str, username: str) -> None:
        for limiter, key in ((self.ip_limiter, f"ip|{ip}"), (self.account_limiter, f"user|{username.lower()[:120]}")):
            if limiter is not None:
                limiter.hit(key)

    async def check_password(self, username: str, password: str) -> Principal | None:
        try:
            return await authenticate_password(self.engine, username, password, passwords=self.passwords)
        except PasswordHasherBusy:
            raise HTTPException(
                429, "too many logins in progress; retry shortly", headers={"Retry-After": "1"}
            ) from None

    # ---- CSRF ----------------------------------------------------------------------------------
    def origin_allowed(self, request: Request) -> bool:
        """False when the browser says the request comes from another site."""
        origin = request.headers.get("origin")
        if origin is not None:
            origin = origin.rstrip("/")
            if origin in self.trusted_origins:
                return True
            host = request.headers.get("host", "")
            return origin != "null" and bool(host) and urlsplit(origin).netloc == host
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")

    # ---- Basic ---------------------------------------------------------------------------------
    async def basic(self, request: Request, value: str) -> Principal:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise HTTPException(401, "malformed basic credentials") from None
        username, _, password = decoded.partition(":")
        cache_key = hashlib.sha256(_bytes(decoded)).hexdigest()
        cached = self._basic.get(cache_key)
        fresh = cached is not None and cached.until > time.monotonic() and cached.principal.user_id is not None
        if (
            fresh
            and cached
            and await password_fingerprint(self.engine, cached.principal.user_id or 0) == cached.fingerprint
        ):
            self._basic.move_to_end(cache_key)
            return cached.principal
        self._basic.pop(cache_key, None)
        ip = client_ip(request)
        self.check_login_allowed(ip, username, record=False)
        principal = await self.check_password(username, password)
        if principal is None or principal.user_id is None:
            self.record_failure(ip, username)
            raise HTTPException(401, "invalid username or password", headers={"WWW-Authenticate": "Basic"})
        fingerprint = await password_fingerprint(self.engine, principal.user_id)
        if fingerprint is not None:
            ttl = self.settings.basic_auth_cache_ttl.total_seconds()
            self._basic[cache_key] = _CachedBasic(principal, fingerprint, time.monotonic() + ttl)
            while len(self._basic) > _BASIC_CACHE_SIZE:
                self._basic.popitem(last=False)
        return principal

    # ---- OIDC Bearer JWTs ----------------------------------------------------------------------
    async def oidc_bearer(self, token: str) -> Principal:
        """An access or ID token from the OIDC provider: verified against its JWKS, the account
        provisioned (or found) by (issuer, subject), the role taken from the token's role claim
        or, for tokens without that claim, the one the last login stored."""
        assert self.oidc is not None
        try:
            identity, has_role_claim = await self.oidc.bearer_identity(token)
        except OidcError as exc:
            headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
            raise HTTPException(exc.status, exc.message, headers=headers) from None
        role = identity.role
        if not has_role_claim:
            role = await oidc_user_role(self.engine, identity.issuer, identity.subject) or role
        if role is None:
            raise HTTPException(403, "this provider account maps to no reelhouse role (OIDC_ROLE_CLAIM, OIDC_ROLE_MAP)")
        principal, created = await provision_oidc_user(
            self.engine, identity.issuer, identity.subject, identity.username, role, login=False
        )
        if principal is None:
            raise HTTPException(401, "this user is locked", headers={"WWW-Authenticate": "Bearer"})
        if created:
            from reelhouse.core.security.audit import append as audit

            await audit(self.engine, "oidc", "user.create", f"user:{principal.user_id}", {"role": role, "via": "oidc"})
        return principal

    # ---- all credentials -----------------------------------------------------------------------
    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        if len(header) > MAX_CREDENTIAL_LENGTH:
            raise HTTPException(401, "credentials too long")
        scheme, _, value = header.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        x_admin = request.headers.get("x-admin-token")
        if x_admin is not None:
            if self.admin_token and hmac.compare_digest(_bytes(x_admin), _bytes(self.admin_token)):
                return Principal(name="admin-token", role="admin", via="admin-token")
            raise HTTPException(401, "invalid admin token")
        if scheme == "bearer" and value:
            if self.admin_token and hmac.compare_digest(_bytes(value), _bytes(self.admin_token)):
                return Principal(name="admin-token", role="admin", via="admin-token")
            if self.oidc is not None and value.count(".") == 2 and not value.startswith("rh_"):
                return await self.oidc_bearer(value)
            principal = await authenticate_token(self.engine, value, self.session_policy)
            if principal is None:
                raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
            return principal
        unsafe = request.method not in SAFE_METHODS
        if scheme == "basic" and value:
            if unsafe and not self.origin_allowed(request):
                raise HTTPException(403, "cross-site request refused (CSRF): use a Bearer token from other sites")
            return await self.basic(request, value)
        return None


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def auth_service(request: Request) -> AuthService:
    service: AuthService | None = getattr(request.app.state, "auth", None)
    if service is None:  # an app assembled without create_app (tests of single routers)
        service = request.app.state.auth = AuthService.from_runtime(request.app.state.runtime)
    return service


async def resolve_principal(request: Request) -> Principal | None:
    cached = getattr(request.state, "principal", "unset")
    if cached != "unset":
        return cached  # type: ignore[return-value]
    principal = await auth_service(request).authenticate(request)
    request.state.principal = principal
    return principal


class RoleDependency:
    """Dependency: 401 without credentials, 403 with too small a role. `required_role` is read
    by the OpenAPI error documentation and the route-table audit test."""

    def __init__(self, role: str) -> None:
        self.required_role = role
        self.__name__ = f"require_{role}"

    async def __call__(self, request: Request) -> Principal:
        principal = await resolve_principal(request)
        if principal is None:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        if not principal.has_role(self.required_role):
            raise HTTPException(403, f"requires role {self.required_role}")
        return principal


def require_role(role: str) -> Callable[[Request], Awaitable[Principal]]:
    return RoleDependency(role)


require_viewer = require_role("viewer")
require_operator = require_role("operator")
require_admin = require_role("admin")


def check_login_rate(request: Request, username: str) -> None:
    """Count one login attempt for the caller's address and for `username` (429 when over)."""
    auth_service(request).check_login_allowed(client_ip(request), username, record=True)
