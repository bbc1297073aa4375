"""Twitch OAuth2 (id.twitch.tv): the authorization-code flow for the chat/user token and the
client-credentials grant behind Helix's app access token.

Storage of state values and tokens is the caller's job (database, encrypted); this module only
speaks the protocol. Tokens never appear in logs, exception messages or `repr()`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from reelhouse.core.providers.errors import Rejected
from reelhouse.core.providers.http import ProviderHttp, RetryPolicy, provider_message
from reelhouse.core.telemetry.metrics import counter

PROVIDER = "twitch"
DEFAULT_AUTH_BASE = "https://id.twitch.tv/oauth2"
DEFAULT_SCOPES = ("chat:read", "chat:edit")
# Twitch documents 60 min for user tokens; used only when a response omits expires_in.
_DEFAULT_EXPIRES_IN = 3600

OAUTH_TOKEN_REFRESH = counter("oauth_token_refresh_total", "OAuth token refresh attempts", ("provider", "status"))


@dataclass(frozen=True)
class OAuthTokens:
    """A token set as returned by a token endpoint; secrets are excluded from repr."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    scopes: tuple[str, ...] = ()
    token_type: str = "bearer"

    def expires_within(self, window: timedelta, now: datetime | None = None) -> bool:
        return self.expires_at - (now or datetime.now(UTC)) <= window


class TwitchOAuth:
    """Token-endpoint client for id.twitch.tv. Pass `http` to share a connection pool (the
    Helix client does); otherwise one is created from `transport`/`timeout`."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        redirect_uri: str | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        auth_base: str = DEFAULT_AUTH_BASE,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
        max_attempts: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 4.0,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.scopes = tuple(scopes)
        self.auth_base = auth_base.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(transport=transport, timeout=timeout)
        policy = RetryPolicy(max_attempts=max_attempts, backoff_base=backoff_base, backoff_cap=backoff_cap)
        self._sender = ProviderHttp(PROVIDER, self._http, policy)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> TwitchOAuth:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @staticmethod
    def new_state() -> str:
        """An unguessable CSRF state; the caller stores it (with an expiry) before redirecting."""
        return secrets.token_urlsafe(32)

    def authorize_url(self, state: str, *, force_verify: bool = False) -> str:
        if not self.redirect_uri:
            raise ValueError("redirect_uri is required for the authorization-code flow")
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.scopes),
            "state": state,
        }
        if force_verify:
            params["force_verify"] = "true"
        return f"{self.auth_base}/authorize?{urlencode(params)}"

    async def exchange_code(self, code: str) -> OAuthTokens:
        if not self.redirect_uri:
            raise ValueError("redirect_uri is required for the authorization-code flow")
        return await self._token_request(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri},
            what="code exchange",
        )

    async def refresh(self, refresh_token: str) -> OAuthTokens:
        """Refresh a user token. Twitch rotates refresh tokens, but if a response omits one the
        old one stays valid, so it is kept rather than lost."""
        try:
            tokens = await self._token_request(
                {"grant_type": "refresh_token", "refresh_token": refresh_token}, what="token refresh"
            )
        except Exception:
            OAUTH_TOKEN_REFRESH.labels(provider="twitch", status="failure").inc()
            raise
        OAUTH_TOKEN_REFRESH.labels(provider="twitch", status="success").inc()
        if tokens.refresh_token is None:
            tokens = replace(tokens, refresh_token=refresh_token)
        return tokens

    async def client_credentials(self) -> OAuthTokens:
        """An app access token (no user context) for Helix."""
        return await self._token_request({"grant_type": "client_credentials"}, what="app token")

    async def _token_request(self, form: dict[str, str], *, what: str) -> OAuthTokens:
        data = {**form, "client_id": self.client_id, "client_secret": self._client_secret}
        response = await self._sender.send("POST", f"{self.auth_base}/token", what=what, data=data)
        if response.status_code != 200:
            # 400 invalid code/refresh token, 403 invalid client: the user or operator must act.
            raise Rejected(
                PROVIDER,
                f"{what} rejected (HTTP {response.status_code}): {provider_message(response)}",
                response.status_code,
            )
        return _tokens_from_json(response.json())


def _tokens_from_json(body: Mapping[str, Any]) -> OAuthTokens:
    try:
        access_token = str(body["access_token"])
    except KeyError:
        raise Rejected(PROVIDER, "token endpoint answered without an access_token") from None
    expires_in = int(body.get("expires_in") or _DEFAULT_EXPIRES_IN)
    scope = body.get("scope") or ()
    # Twitch sends scope as a JSON list; RFC 6749 allows a space-separated string.
    scopes = tuple(scope.split()) if isinstance(scope, str) else tuple(str(s) for s in scope)
    return OAuthTokens(
        access_token=access_token,
        refresh_token=body.get("refresh_token"),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        scopes=scopes,
        token_type=str(body.get("token_type", "bearer")),
    )
