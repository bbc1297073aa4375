"""Run the real OIDC provider of `tests/fakes/oidc_provider.mjs` (npm `oidc-provider`) on loopback.

The signing key is generated here and handed to the provider as a private JWK, so tests can
also sign tokens with the provider's own key (expired, wrong audience...) and with keys it does
not publish. The issuer is `http://localhost:<port>`: another site than reelhouse's
`127.0.0.1`, so a browser treats the login round trip as the cross-site navigation it is in
production.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
CLIENT_ID = "reelhouse"
CLIENT_SECRET = "test-client-secret-not-real"
MACHINE_CLIENT_ID = "reelhouse-ci"
MACHINE_CLIENT_SECRET = "test-machine-secret-not-real"
API_AUDIENCE = "https://reelhouse.test/api"
# login name -> the groups its `groups` claim carries
ACCOUNTS = {
    "olga": ["staff", "rh-operators"],
    "adele": ["rh-admins"],
    "victor": ["staff"],
    "admin": [],  # a provider account named like the local admin: must not become it
}
ROLE_MAP = "rh-admins=admin,rh-operators=operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_signing_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return key, jwk


def node_available() -> bool:
    return shutil.which("node") is not None and (REPO / "node_modules" / "oidc-provider").is_dir()


@dataclass
class OidcProvider:
    issuer: str
    port: int
    key: rsa.RSAPrivateKey
    kid: str
    redirect_uris: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def sign(self, claims: dict[str, Any], *, key: Any = None, kid: str | None = None, alg: str = "RS256") -> str:
        """A JWT signed with the provider's key (or another), with iss/iat/exp filled in."""
        now = int(time.time())
        payload = {"iss": self.issuer, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(payload, key or self.key, algorithm=alg, headers={"kid": kid or self.kid})

    def client_credentials_token(self, client_id: str = MACHINE_CLIENT_ID, secret: str = MACHINE_CLIENT_SECRET) -> str:
        response = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "scope": "api", "resource": API_AUDIENCE},
            auth=(client_id, secret),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path and self.log_path.exists() else ""


def _config(provider: OidcProvider, jwks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "issuer": provider.issuer,
        "port": provider.port,
        "jwks": {"keys": jwks},
        "apiAudience": API_AUDIENCE,
        "accounts": {name: {"groups": groups} for name, groups in ACCOUNTS.items()},
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": provider.redirect_uris,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            {
                "client_id": MACHINE_CLIENT_ID,
                "client_secret": MACHINE_CLIENT_SECRET,
                "grant_types": ["client_credentials"],
                "response_types": [],
                "redirect_uris": [],
                "scope": "api",
                "groups": ["rh-operators"],
            },
        ],
    }


@contextmanager
def run_provider(
    workdir: Path, redirect_uris: list[str], *, port: int | None = None, kid: str = "key-1"
) -> Iterator[OidcProvider]:
    port = port or free_port()
    key, jwk = new_signing_key(kid)
    provider = OidcProvider(f"http://localhost:{port}", port, key, kid, redirect_uris)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"oidc-{kid}.json"
    config_path.write_text(json.dumps(_config(provider, [jwk])))
    config_path.chmod(0o600)
    provider.log_path = workdir / f"oidc-{kid}.log"
    env = {**os.environ, "NODE_ENV": "development"}
    with open(provider.log_path, "wb") as log:
        provider.process = subprocess.Popen(
            ["node", str(SCRIPT), str(config_path)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(provider)
            yield provider
        finally:
            provider.process.terminate()
            try:
                provider.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                provider.process.kill()
                provider.process.wait()


def _wait_ready(provider: OidcProvider, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{provider.port}/.well-known/openid-configuration"
    while time.monotonic() < deadline:
        assert provider.process is not None
        if provider.process.poll() is not None:
            raise RuntimeError(f"oidc provider exited with {provider.process.returncode}:\n{provider.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"oidc provider not ready after {timeout}s:\n{provider.log_tail()}")
