"""The parts of OIDC that need no provider: role mapping, settings checks, the sealed pending
sign-in, PKCE, and token verification against a JWKS served over an in-process transport."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from reelhouse.core.security.crypto import Keyring
from reelhouse.core.security.oidc import (
    OidcClient,
    OidcError,
    OidcSettings,
    PendingLogin,
    ProviderUnavailable,
    check_issuer_url,
    claim_at,
    parse_role_map,
    pkce_challenge,
)
from tests.fakes.oidc import new_signing_key

ISSUER = "https://id.example.test"


def settings(**values: Any) -> OidcSettings:
    base = {"issuer_url": ISSUER, "client_id": "rh"}
    return OidcSettings.model_validate({**base, **values})


def test_role_mapping_highest_wins_and_default_applies() -> None:
    client = OidcClient(settings(role_map=["ops=operator", "boss=admin"]))
    assert client.mapped_role({"groups": ["staff", "ops"]}) == "operator"
    assert client.mapped_role({"groups": ["ops", "boss"]}) == "admin"
    assert client.mapped_role({"groups": "ops boss"}) == "admin"  # space-separated string claims
    assert client.mapped_role({"groups": ["admin"]}) == "viewer"  # only the map counts once given
    assert client.mapped_role({}) == "viewer"
    strict = OidcClient(settings(default_role="none", role_claim="realm_access.roles"))
    assert strict.mapped_role({"realm_access": {"roles": ["operator"]}}) == "operator"  # names as roles
    assert strict.mapped_role({"realm_access": {"roles": ["nobody"]}}) is None
    assert strict.mapped_role({"realm_access": {"roles": [1, None, {"x": 1}]}}) is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="OIDC_ROLE_MAP"):
        parse_role_map(["ops=root"])
    with pytest.raises(ValueError, match="OIDC_ROLE_MAP"):
        parse_role_map(["operator"])
    assert parse_role_map(["a=b=viewer"]) == {"a=b": "viewer"}
    with pytest.raises(ValueError, match="https"):
        check_issuer_url("http://id.example.test")
    with pytest.raises(ValueError, match="http"):
        check_issuer_url("ftp://id.example.test")
    check_issuer_url("http://127.0.0.1:8080")
    check_issuer_url("http://localhost:9000/realms/x")
    assert claim_at({"a.b": 1, "a": {"b": 2}}, "a.b") == 1
    assert claim_at({"a": {"b": 2}}, "a.b") == 2
    assert claim_at({"a": [1]}, "a.b") is None


def test_pkce_challenge_is_rfc7636_s256() -> None:
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64decode(pkce_challenge(verifier) + "=") == digest


def test_pending_login_is_sealed_and_expires() -> None:
    keyring = Keyring.from_secrets(base64.b64encode(b"k" * 32).decode())
    pending = PendingLogin.new("/ops", "https://rh.test/auth/oidc/callback")
    sealed = pending.seal(keyring)
    assert pending.verifier not in sealed and pending.state not in sealed
    assert PendingLogin.unseal(keyring, sealed) == pending
    other = Keyring.from_secrets(base64.b64encode(b"x" * 32).decode())
    with pytest.raises(OidcError, match="not recognised"):
        PendingLogin.unseal(other, sealed)
    with pytest.raises(OidcError, match="not recognised"):
        PendingLogin.unseal(keyring, "garbage")
    pending.created = time.time() - 3600
    with pytest.raises(OidcError, match="expired"):
        PendingLogin.unseal(keyring, pending.seal(keyring))


class FakeProvider:
    """Discovery and JWKS over httpx.MockTransport, counting JWKS fetches."""

    def __init__(self) -> None:
        self.key, jwk = new_signing_key("k1")
        self.jwks = [jwk]
        self.jwks_fetches = 0
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(502)
        if request.url.path == "/.well-known/openid-configuration":
            doc = {
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/auth",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
            }
            return httpx.Response(200, json=doc)
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            public = [{k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")} for jwk in self.jwks]
            return httpx.Response(200, content=json.dumps({"keys": public}))
        return httpx.Response(404)

    def sign(self, claims: dict[str, Any], kid: str = "k1", key: Any = None) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": "rh", "sub": "u1", "iat": now, "exp": now + 60, **claims}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})


async def test_jwks_cached_and_refreshed_on_unknown_kid_only_so_often() -> None:
    fake = FakeProvider()
    client = OidcClient(settings(jwks_min_refresh="30s"), transport=httpx.MockTransport(fake.handler))
    try:
        for _ in range(3):
            assert (await client.verify(fake.sign({}), audiences=["rh"]))["sub"] == "u1"
        assert fake.jwks_fetches == 1
        # A new key at the provider right after the last fetch: not refetched yet (min refresh).
        key2, jwk2 = new_signing_key("k2")
        fake.jwks.append(jwk2)
        with pytest.raises(OidcError, match="does not publish"):
            await client.verify(fake.sign({}, kid="k2", key=key2), audiences=["rh"])
        assert fake.jwks_fetches == 1
        client._keys_at -= 31  # the min refresh interval has passed
        assert (await client.verify(fake.sign({}, kid="k2", key=key2), audiences=["rh"]))["sub"] == "u1"
        assert fake.jwks_fetches == 2
        # The provider away: cached keys keep verifying even when stale, unknown ones are a 503.
        fake.down = True
        client._keys_at -= 7200
        client._discovery = None
        assert (await client.verify(fake.sign({}), audiences=["rh"]))["sub"] == "u1"
        with pytest.raises(ProviderUnavailable):
            await client.verify(fake.sign({}, kid="k3"), audiences=["rh"])
    finally:
        await client.aclose()


async def test_nonce_and_required_claims() -> None:
    fake = FakeProvider()
    client = OidcClient(settings(), transport=httpx.MockTransport(fake.handler))
    try:
        with pytest.raises(OidcError, match="nonce") as raised:
            await client.verify(fake.sign({"nonce": "a"}), audiences=["rh"], nonce="b")
        assert raised.value.status == 400
        assert (await client.verify(fake.sign({"nonce": "a"}), audiences=["rh"], nonce="a"))["nonce"] == "a"
        now = int(time.time())
        token = jwt.encode({"iss": ISSUER, "aud": "rh", "sub": "u", "iat": now}, fake.key, "RS256", {"kid": "k1"})
        with pytest.raises(OidcError, match="no exp claim"):
            await client.verify(token, audiences=["rh"])
        with pytest.raises(OidcError, match="too long"):
            await client.verify("a." * 5000, audiences=["rh"])
        with pytest.raises(OidcError, match="subject"):
            await client.verify(fake.sign({"sub": "s" * 300}), audiences=["rh"])
    finally:
        await client.aclose()
