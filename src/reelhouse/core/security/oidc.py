# Over 400 lines: discovery, the code flow, JWKS caching and claim mapping form one verifier.
"""OpenID Connect: browser login (authorization code with PKCE) and Bearer JWTs for the API.

Everything comes from the issuer's discovery document (`/.well-known/openid-configuration`):
the authorization, token and userinfo endpoints and the JWKS. ID tokens and JWT access tokens
are verified with PyJWT against the JWKS: signature (asymmetric algorithms only, so a token
cannot pick "none" or HMAC with the public key as secret), issuer, audience, expiry (with
`OIDC_CLOCK_SKEW`), and for logins the nonce. Keys are cached for `OIDC_JWKS_CACHE_TTL`; a token
naming an unknown `kid` refetches the set once (at most every `OIDC_JWKS_MIN_REFRESH`, so
tokens with made-up kids cannot make us hammer the provider), which is how key rotation at the
provider is picked up without a restart.

Roles come from one claim (`OIDC_ROLE_CLAIM`, a dotted path such as `realm_access.roles`) whose
values are mapped by `OIDC_ROLE_MAP` (`idp-group=role,...`); the highest mapped role wins and an
account with none gets `OIDC_DEFAULT_ROLE` (`viewer`, or `none` to refuse it). Accounts are
linked to local users by (issuer, subject) and provisioned on first sight
(`users.provision_oidc_user`).

Every failure is an `OidcError` with a message for the caller; the HTTP layers turn it into a
401 (bad token), 403 (no role) or a login page that says what went wrong, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt

from reelhouse.core.security.crypto import CryptoError, Keyring
from reelhouse.core.security.settings import OidcSettings
from reelhouse.core.security.users import ROLES

log = logging.getLogger("reelhouse.security.oidc")

# Signature algorithms a provider may sign with: asymmetric only.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_DOCUMENT_BYTES = 256 * 1024  # discovery, JWKS, token and userinfo responses
MAX_TOKEN_LENGTH = 8192
PENDING_LOGIN_TTL = 600  # seconds a browser has to come back from the provider
PENDING_CONTEXT = b"reelhouse oidc pending login v1"


class OidcError(Exception):
    """A login or token that cannot be accepted; `status` is what the API answers."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ProviderUnavailable(OidcError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def parse_role_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        value, sep, role = pair.rpartition("=")
        role = role.strip()
        if not sep or not value.strip() or role not in ROLES:
            raise ValueError(f"OIDC_ROLE_MAP: {pair[:80]!r} is not claim-value=viewer|operator|admin")
        mapping[value.strip()] = role
    return mapping


def check_issuer_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("OIDC_ISSUER_URL must be an http(s) URL")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError("OIDC_ISSUER_URL must use https (plain http only on loopback)")


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """`claims["a"]["b"]` for path `a.b`; a claim literally named `a.b` wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass
class PendingLogin:
    """What the browser carries (sealed in a cookie) between leaving for the provider and
    coming back: the state it must return, the nonce the ID token must carry, the PKCE verifier."""

    state: str
    nonce: str
    verifier: str
    next: str
    redirect_uri: str
    created: float = field(default_factory=time.time)

    @classmethod
    def new(cls, next_path: str, redirect_uri: str) -> PendingLogin:
        return cls(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),  # 64 characters of the PKCE alphabet
            next=next_path,
            redirect_uri=redirect_uri,
        )

    def seal(self, keyring: Keyring) -> str:
        return keyring.encrypt(json.dumps(asdict(self)), PENDING_CONTEXT)

    @classmethod
    def unseal(cls, keyring: Keyring, sealed: str) -> PendingLogin:
        try:
            data = json.loads(keyring.decrypt_text(sealed[:4096], PENDING_CONTEXT))
            pending = cls(**{k: data[k] for k in ("state", "nonce", "verifier", "next", "redirect_uri", "created")})
        except (CryptoError, ValueError, KeyError, TypeError):
            raise OidcError("the sign-in attempt is not recognised; start again", 400) from None
        if not 0 <= time.time() - float(pending.created) <= PENDING_LOGIN_TTL:
            raise OidcError("the sign-in attempt expired; start again", 400)
        return pending


@dataclass(frozen=True)
class Identity:
    """A provider account as a login or a token presents it."""

    issuer: str
    subject: str
    username: str | None
    role: str | None  # None: the token carried no role claim at all
    claims: dict[str, Any]


@dataclass
class _Cached:
    value: Any
    at: float


class OidcClient:
    """Discovery, keys, token verification and the code exchange for one configured provider."""

    def __init__(self, settings: OidcSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        check_issuer_url(settings.issuer_url)
        self.settings = settings
        self.issuer = settings.issuer_url.rstrip("/")
        self.role_map = parse_role_map(settings.role_map)
        self.audiences = settings.audience or [settings.client_id]
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._discovery: _Cached | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = 0.0
        self._keys_lock = asyncio.Lock()
        self._min_refresh = settings.jwks_min_refresh.total_seconds()
        self._discovery_lock = asyncio.Lock()

    # ---- HTTP to the provider ------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.http_timeout, transport=self._transport, follow_redirects=False
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _json(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            response = await self._client().request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"the identity provider did not answer ({what}): {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise ProviderUnavailable(f"the identity provider failed ({what}): HTTP {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderUnavailable(f"the identity provider's {what} response is too large")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"the identity provider's {what} response is not a JSON object")
        return response.status_code, body

    # ---- discovery and keys --------------------------------------------------------------------
    async def discovery(self) -> dict[str, Any]:
        ttl = self.settings.jwks_cache_ttl.total_seconds()
        cached = self._discovery
        if cached is not None and time.monotonic() - cached.at < ttl:
            return dict(cached.value)
        async with self._discovery_lock:
            if self._discovery is not None and self._discovery is not cached:
                return dict(self._discovery.value)
            status, doc = await self._json("GET", f"{self.issuer}/.well-known/openid-configuration", "discovery")
            if status != 200:
                raise ProviderUnavailable(f"the identity provider's discovery document answered HTTP {status}")
            if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                raise ProviderUnavailable("the discovery document names another issuer than OIDC_ISSUER_URL")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str):
                    raise ProviderUnavailable(f"the discovery document has no {key}")
            self._discovery = _Cached(doc, time.monotonic())
            return dict(doc)

    async def _refresh_keys(self) -> None:
        doc = await self.discovery()
        status, body = await self._json("GET", doc["jwks_uri"], "JWKS")
        if status != 200 or not isinstance(body.get("keys"), list):
            raise ProviderUnavailable("the identity provider's JWKS could not be read")
        keys: dict[str, jwt.PyJWK] = {}
        for index, entry in enumerate(body["keys"][:100]):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key type PyJWT does not know; others may still verify
            keys[str(entry.get("kid") or f"#{index}")] = key
        self._keys, self._keys_at = keys, time.monotonic()
        log.info("oidc: loaded %d signing keys from the provider", len(keys))

    async def signing_key(self, kid: str | None) -> jwt.PyJWK:
        ttl = self.settings.jwks_cache_ttl.total_seconds()
        stale = time.monotonic() - self._keys_at >= ttl
        if stale or (kid is not None and kid not in self._keys):
            async with self._keys_lock:
                age = time.monotonic() - self._keys_at
                if age >= ttl or (kid is not None and kid not in self._keys and age >= self._min_refresh):
                    try:
                        await self._refresh_keys()
                    except ProviderUnavailable:
                        if kid is None or kid not in self._keys:
                            raise
                        # Keys we already hold stay good while the provider is briefly away.
                        log.warning("oidc: could not refresh the provider's keys; using the cached ones")
        if kid is not None:
            key = self._keys.get(kid)
            if key is None:
                raise OidcError("token signed with a key the identity provider does not publish")
            return key
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise OidcError("token names no key id (kid)")

    # ---- tokens --------------------------------------------------------------------------------
    async def verify(self, token: str, *, audiences: list[str], nonce: str | None = None) -> dict[str, Any]:
        """The claims of a JWT from the provider, or OidcError (401) saying why not."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise OidcError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("malformed token") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise OidcError(f"token algorithm {str(alg)[:20]!r} is not accepted")
        kid = header.get("kid")
        key = await self.signing_key(str(kid) if kid is not None else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audiences,
                issuer=self.issuer,
                leeway=self.settings.clock_skew,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise OidcError("token expired") from None
        except jwt.InvalidAudienceError:
            raise OidcError("token audience is not accepted here") from None
        except jwt.InvalidIssuerError:
            raise OidcError("token issuer is not OIDC_ISSUER_URL") from None
        except jwt.InvalidSignatureError:
            raise OidcError("token signature is invalid") from None
        except jwt.ImmatureSignatureError:
            raise OidcError("token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise OidcError(f"token has no {exc.claim} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise OidcError("invalid token") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"] or len(claims["sub"]) > 255:
            raise OidcError("token subject is missing or too long")
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("ID token nonce does not match this sign-in", 400)
        return claims

    # ---- roles and identities ------------------------------------------------------------------
    def mapped_role(self, claims: dict[str, Any]) -> str | None:
        """The highest role the role claim maps to; `OIDC_DEFAULT_ROLE` when it maps to none
        (None for `none`)."""
        raw = claim_at(claims, self.settings.role_claim)
        values: list[str] = []
        if isinstance(raw, str):
            values = raw.split()
        elif isinstance(raw, list):
            values = [v for v in raw[:1000] if isinstance(v, str)]
        mapping = self.role_map or {role: role for role in ROLES}
        found = [mapping[v] for v in values if v in mapping]
        if found:
            return max(found, key=ROLES.index)
        return None if self.settings.default_role == "none" else self.settings.default_role

    def has_role_claim(self, claims: dict[str, Any]) -> bool:
        return claim_at(claims, self.settings.role_claim) is not None

    def identity(self, claims: dict[str, Any]) -> Identity:
        username = claim_at(claims, self.settings.username_claim) or claims.get("email")
        if not username and claims.get("client_id") == claims.get("sub"):
            username = claims.get("client_id")  # a client-credentials token: the client is the account
        return Identity(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            username=str(username)[:200] if isinstance(username, str) else None,
            role=self.mapped_role(claims),
            claims=claims,
        )

    async def bearer_identity(self, token: str) -> tuple[Identity, bool]:
        """A Bearer JWT (access or ID token) → (identity, whether it carried the role claim)."""
        claims = await self.verify(token, audiences=self.audiences)
        return self.identity(claims), self.has_role_claim(claims)

    # ---- the authorization code flow -----------------------------------------------------------
    async def authorization_url(self, pending: PendingLogin) -> str:
        doc = await self.discovery()
        scopes = self.settings.scopes.split()
        if "openid" not in scopes:
            scopes.insert(0, "openid")
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": pending.redirect_uri,
            "scope": " ".join(scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": pkce_challenge(pending.verifier),
            "code_challenge_method": "S256",
        }
        endpoint = doc["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    async def complete_login(self, pending: PendingLogin, code: str, state: str) -> Identity:
        """The callback: state checked against the browser's pending login, the code exchanged
        with the PKCE verifier, the ID token verified (nonce included), userinfo merged in."""
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise OidcError("the sign-in response does not match this browser's sign-in (state mismatch)", 400)
        if not code or len(code) > 2048:
            raise OidcError("the identity provider returned no authorization code", 400)
        doc = await self.discovery()
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        auth: tuple[str, str] | None = None
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if self.settings.client_secret and "client_secret_basic" in methods:
            auth = (self.settings.client_id, self.settings.client_secret)
        else:
            data["client_id"] = self.settings.client_id
            if self.settings.client_secret:
                data["client_secret"] = self.settings.client_secret
        status, body = await self._json(
            "POST", doc["token_endpoint"], "token", data=data, auth=auth, headers={"Accept": "application/json"}
        )
        if status != 200:
            error = str(body.get("error", "error"))[:100]
            detail = str(body.get("error_description", ""))[:200]
            raise OidcError(f"the identity provider refused the sign-in: {error}{': ' + detail if detail else ''}", 400)
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider returned no ID token", 400)
        claims = await self.verify(id_token, audiences=[self.settings.client_id], nonce=pending.nonce)
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.client_id:
            raise OidcError("ID token was issued to another client (azp)", 400)
        access_token = body.get("access_token")
        userinfo_url = doc.get("userinfo_endpoint")
        if isinstance(access_token, str) and isinstance(userinfo_url, str):
            claims = {**(await self._userinfo(userinfo_url, access_token, claims["sub"])), **claims}
        return self.identity(claims)

    async def _userinfo(self, url: str, access_token: str, subject: str) -> dict[str, Any]:
        status, info = await self._json(
            "GET", url, "userinfo", headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        )
        if status != 200:
            log.warning("oidc: userinfo answered HTTP %s; using the ID token's claims only", status)
            return {}
        if info.get("sub") != subject:
            raise OidcError("userinfo is about another account than the ID token", 400)
        return info
