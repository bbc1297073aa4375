"""OIDC against a real provider (npm `oidc-provider`, tests/fakes/oidc_provider.mjs) on loopback.

A `reelhouse serve` configured with OIDC_* and the provider at `http://localhost:<port>` (another
site than reelhouse's 127.0.0.1, as in production); Chromium signs in through the provider's
login and consent pages and lands signed in with the role its `groups` claim maps to. The API
takes the provider's client-credentials access tokens and ID-token-shaped JWTs, and refuses
expired, wrong-audience, tampered, foreign-key and algorithm-swapped ones with a 401 and a
message. A callback whose state or PKCE verifier does not match the browser's sign-in is
refused. The provider restarted with a new signing key is picked up by the unknown `kid`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from reelhouse.core.security.crypto import Keyring
from reelhouse.core.security.oidc import PendingLogin
from tests.e2e.harness import ConsoleErrors, Server, run_server
from tests.fakes import oidc as fake
from tests.fakes.oidc import API_AUDIENCE, CLIENT_ID, ROLE_MAP, OidcProvider, new_signing_key

MASTER_KEY = base64.b64encode(b"o" * 32).decode()
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="module", autouse=True)
def _require_node() -> None:
    if not fake.node_available():
        message = "node and node_modules/oidc-provider are required (make node_modules/.package-lock.json)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


class ProviderHandle:
    """The running provider, restartable on the same port with a new signing key."""

    def __init__(self, workdir: Path, redirect_uri: str, port: int) -> None:
        self.workdir, self.redirect_uri, self.port = workdir, redirect_uri, port
        self._stack = ExitStack()
        self.current = self._start("key-1")

    def _start(self, kid: str) -> OidcProvider:
        return self._stack.enter_context(fake.run_provider(self.workdir, [self.redirect_uri], port=self.port, kid=kid))

    def restart(self, kid: str) -> OidcProvider:
        self._stack.close()
        self._stack = ExitStack()
        self.current = self._start(kid)
        return self.current

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def oidc_port() -> int:
    return fake.free_port()


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory: pytest.TempPathFactory, oidc_port: int) -> Iterator[Server]:
    env = {
        "OIDC_ISSUER_URL": f"http://localhost:{oidc_port}",
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": fake.CLIENT_SECRET,
        "OIDC_ROLE_CLAIM": "groups",
        "OIDC_ROLE_MAP": ROLE_MAP,
        "OIDC_AUDIENCE": f"{CLIENT_ID},{API_AUDIENCE}",
        "OIDC_DISPLAY_NAME": "Test IdP",
        "OIDC_JWKS_MIN_REFRESH": "0",
        "MASTER_ENCRYPTION_KEY": MASTER_KEY,
    }
    with run_server(tmp_path_factory.mktemp("oidc"), env) as served:
        yield served


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory, oidc_server: Server, oidc_port: int) -> Iterator[ProviderHandle]:
    handle = ProviderHandle(tmp_path_factory.mktemp("idp"), f"{oidc_server.url}/auth/oidc/callback", oidc_port)
    yield handle
    handle.close()


class OurConsoleErrors(ConsoleErrors):
    """Console errors of reelhouse's pages only: the provider's development login pages load
    web fonts from the internet (unreachable here) and have no favicon; not ours to assert."""

    def __init__(self, page: Any, origin: str) -> None:
        self.errors, self.allowed = [], []

        def console(msg: Any) -> None:
            if msg.type == "error" and str(msg.location.get("url", "")).startswith(origin):
                self.errors.append(f"console: {msg.text} ({msg.location.get('url')})")

        page.on("console", console)
        page.on("pageerror", lambda exc: page.url.startswith(origin) and self.errors.append(f"pageerror: {exc}"))


def new_page(browser: Any, server: Server) -> tuple[Any, Any, ConsoleErrors]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(60_000)  # a loaded CI machine
    page = context.new_page()
    return context, page, OurConsoleErrors(page, server.url)


def provider_login(page: Any, login: str) -> None:
    """The provider's development interactions: any login, any password, then consent."""
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()


def me(page: Any) -> dict[str, Any]:
    return page.evaluate("fetch('/v1/me').then(r => r.json())")  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("login", "role"),
    [("olga", "operator"), ("adele", "admin"), ("admin", "viewer")],
)
def test_browser_login_lands_signed_in_with_mapped_role(
    browser: Any, oidc_server: Server, provider: ProviderHandle, login: str, role: str
) -> None:
    context, page, errors = new_page(browser, oidc_server)
    try:
        page.goto(oidc_server.url + "/ops/tasks")  # a page that needs a session: to the login page
        page.get_by_role("link", name="Sign in with Test IdP").click()
        page.wait_for_url(f"{provider.current.issuer}/**")
        provider_login(page, login)
        page.wait_for_url(oidc_server.url + "/ops/tasks")  # back where the sign-in started
        assert page.get_by_test_id("user").inner_text().split()[-1] == role
        who = me(page)
        assert who["role"] == role, who
        # "admin" at the provider is a provider account like any other: a user of its own,
        # never the local admin (accounts are linked by issuer and subject, not by name).
        if login == "admin":
            assert who["name"] != "admin" and who["name"].startswith("admin-")
        else:
            assert who["name"] == login
        # The session is a core session: listed among the user's tokens as a login.
        tokens = page.evaluate("fetch('/v1/tokens').then(r => r.json())")
        assert [t["kind"] for t in tokens if t["user_id"] == who["user_id"]] == ["login"]
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["rh_session"]["httpOnly"] and cookies["rh_session"]["sameSite"] == "Strict"
        assert "rh_oidc" not in cookies  # the pending sign-in is gone once used
    finally:
        context.close()
    assert not errors.unexpected(), errors.unexpected()
    with oidc_server.api("admin") as api:
        users = {u["username"]: u for u in api.get("/v1/users").json()}
    assert users[who["name"]]["role"] == role
    assert users["admin"]["role"] == "admin"  # the local admin is untouched


def test_role_follows_the_provider_on_next_login(browser: Any, oidc_server: Server, provider: ProviderHandle) -> None:
    """The provider is the source of truth for roles: a Bearer token with other groups updates
    the stored role, and the next browser login maps it afresh."""
    token = provider.current.sign(
        {"sub": "victor", "aud": CLIENT_ID, "preferred_username": "victor", "groups": ["rh-operators"]}
    )
    response = _bearer(oidc_server, token)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "victor" and response.json()["role"] == "operator"
    context, page, _errors = new_page(browser, oidc_server)
    try:
        page.goto(oidc_server.url + "/auth/oidc/login")
        provider_login(page, "victor")
        page.wait_for_url(oidc_server.url + "/")
        assert me(page)["role"] == "viewer"  # the provider says groups ["staff"]: viewer again
    finally:
        context.close()


def _bearer(server: Server, token: str, path: str = "/v1/me") -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_api_accepts_provider_access_token(oidc_server: Server, provider: ProviderHandle) -> None:
    token = provider.current.client_credentials_token()
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    response = _bearer(oidc_server, token)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == fake.MACHINE_CLIENT_ID
    assert response.json()["role"] == "operator"  # the machine client's groups: rh-operators
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=oidc_server.url, headers=headers, timeout=10) as api:
        # The mapped role is what the API enforces: operator actions pass the role check (the
        # job does not exist), admin ones do not.
        assert api.post("/v1/jobs/999999/cancel").status_code == 404
        assert api.get("/v1/users").status_code == 403
    viewer = provider.current.sign({"sub": "victor", "aud": API_AUDIENCE, "groups": ["staff"]})
    response = httpx.post(
        f"{oidc_server.url}/v1/jobs/999999/cancel", headers={"Authorization": f"Bearer {viewer}"}, timeout=10
    )
    assert response.status_code == 403 and "operator" in response.json()["error"]


def _tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_bad_tokens_get_401_with_a_message(oidc_server: Server, provider: ProviderHandle) -> None:
    idp = provider.current
    now = int(time.time())
    other_key, _ = new_signing_key(idp.kid)
    good = idp.client_credentials_token()
    cases = {
        "expired": (idp.sign({"sub": "olga", "aud": API_AUDIENCE, "iat": now - 7200, "exp": now - 3600}), "expired"),
        "wrong audience": (idp.sign({"sub": "olga", "aud": "https://elsewhere.example/api"}), "audience"),
        "wrong issuer": (idp.sign({"sub": "olga", "aud": API_AUDIENCE, "iss": "http://localhost:1"}), "issuer"),
        "tampered": (_tampered(good, groups=["rh-admins"]), "signature"),
        "foreign key": (idp.sign({"sub": "olga", "aud": API_AUDIENCE}, key=other_key), "signature"),
        "unknown kid": (idp.sign({"sub": "olga", "aud": API_AUDIENCE}, kid="no-such-key"), "does not publish"),
        "hmac with the public key": (
            jwt.encode({"sub": "olga", "aud": API_AUDIENCE, "iss": idp.issuer, "exp": now + 60, "iat": now}, "k" * 32),
            "algorithm",
        ),
        "alg none": (
            jwt.encode(
                {"sub": "olga", "aud": API_AUDIENCE, "iss": idp.issuer, "exp": now + 60}, None, algorithm="none"
            ),
            "algorithm",
        ),
        "no subject": (idp.sign({"aud": API_AUDIENCE}), "sub"),
        "garbage": ("abc.def.ghi", "malformed"),
    }
    for name, (token, words) in cases.items():
        response = _bearer(oidc_server, token)
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert words in response.json()["error"], (name, response.json())
        assert "invalid_token" in response.headers["www-authenticate"], name
    assert _bearer(oidc_server, good).status_code == 200  # the untampered original still works


def test_locked_user_bearer_refused(oidc_server: Server, provider: ProviderHandle) -> None:
    token = provider.current.sign({"sub": "lockme", "aud": CLIENT_ID, "preferred_username": "lockme"})
    assert _bearer(oidc_server, token).status_code == 200  # provisioned on first sight
    with oidc_server.api("admin") as api:
        user = next(u for u in api.get("/v1/users").json() if u["username"] == "lockme")
        assert api.post(f"/v1/users/{user['id']}/lock").status_code == 200
    response = _bearer(oidc_server, token)
    assert response.status_code == 401 and "locked" in response.json()["error"]


def _capture_callback(browser: Any, server: Server, login: str) -> tuple[dict[str, str], str]:
    """Sign in at the provider but arrive at reelhouse's callback without the pending sign-in
    cookie (taken out of the browser just before consent): the callback refuses that before it
    exchanges anything, which leaves the code and state it was given, and the browser's sealed
    cookie, for the test to replay."""
    context, page, _errors = new_page(browser, server)
    try:
        page.goto(server.url + "/auth/oidc/login")
        page.locator("input[name=login]").fill(login)
        page.locator("input[name=password]").fill("any password")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").wait_for()
        cookie = next(c["value"] for c in context.cookies() if c["name"] == "rh_oidc")
        context.clear_cookies(name="rh_oidc")
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{server.url}/auth/oidc/callback?**")
        assert "no sign-in cookie" in page.content()
        callback = page.url
    finally:
        context.close()
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    return query, cookie


def _callback(server: Server, query: dict[str, str], cookie: str | None) -> httpx.Response:
    cookies = {"rh_oidc": cookie} if cookie is not None else {}
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=20) as client:
        return client.get("/auth/oidc/callback", params=query)


def test_state_and_pkce_mismatch_refused(browser: Any, oidc_server: Server, provider: ProviderHandle) -> None:
    query, cookie = _capture_callback(browser, oidc_server, "olga")
    assert set(query) >= {"code", "state"}
    keyring = Keyring.from_secrets(MASTER_KEY)

    # Another sign-in's state (a login CSRF): refused before the code is even exchanged.
    response = _callback(oidc_server, {**query, "state": secrets.token_urlsafe(24)}, cookie)
    assert response.status_code == 400 and "state mismatch" in response.text
    assert query["iss"] == provider.current.issuer  # RFC 9207: checked when the provider sends it
    response = _callback(oidc_server, {**query, "iss": "https://mix-up.example"}, cookie)
    assert response.status_code == 400 and "another identity provider" in response.text
    # A cookie that was not sealed by us (no cookie at all: see _capture_callback).
    response = _callback(oidc_server, query, cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB"))
    assert response.status_code == 400 and "not recognised" in response.text
    # The right state but another PKCE verifier (the code stolen into an attacker's sign-in):
    # the provider refuses the exchange and so do we.
    pending = PendingLogin.unseal(keyring, cookie)
    pending.verifier = secrets.token_urlsafe(48)
    response = _callback(oidc_server, query, pending.seal(keyring))
    assert response.status_code == 400 and "refused the sign-in: invalid_grant" in response.text, response.text
    assert "rh_session" not in response.cookies

    # A fresh code with its own cookie signs in (the checks above refuse only what is wrong).
    query, cookie = _capture_callback(browser, oidc_server, "olga")
    response = _callback(oidc_server, query, cookie)
    assert response.status_code == 200, response.text
    assert response.cookies.get("rh_session", "").startswith("rh_")
    # ...once: the same code again is refused by the provider.
    replay = _callback(oidc_server, query, cookie)
    assert replay.status_code == 400 and "invalid_grant" in replay.text


def test_provider_key_rotation_picked_up_by_unknown_kid(oidc_server: Server, provider: ProviderHandle) -> None:
    assert _bearer(oidc_server, provider.current.client_credentials_token()).status_code == 200  # key-1 cached
    rotated = provider.restart("key-2")
    token = rotated.client_credentials_token()
    assert jwt.get_unverified_header(token)["kid"] == "key-2"
    response = _bearer(oidc_server, token)
    assert response.status_code == 200, response.text
    # Tokens under the retired key stop verifying once the provider no longer publishes it.
    old = rotated.sign({"sub": "olga", "aud": API_AUDIENCE}, kid="key-1")
    assert _bearer(oidc_server, old).status_code == 401
