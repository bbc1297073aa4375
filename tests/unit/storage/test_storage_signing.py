"""HMAC-signed, expiring object URLs."""

from __future__ import annotations

import time

import pytest

from reelhouse.core.storage.base import StorageError
from reelhouse.core.storage.signing import SignatureInvalid, derive_signing_secret, sign, verify_signed

SECRET = b"unit-test-secret"


def test_valid_signature_verifies() -> None:
    exp = int(time.time()) + 60
    verify_signed(SECRET, "vods/1.mp4", str(exp), sign(SECRET, "vods/1.mp4", exp))
    verify_signed(SECRET, "vods/1.mp4", exp, sign(SECRET, "vods/1.mp4", exp, "n.mp4"), download_name="n.mp4")


@pytest.mark.parametrize(
    ("key", "exp_delta", "download_name", "secret"),
    [
        ("vods/2.mp4", 0, None, SECRET),  # other key
        ("vods/1.mp4", 3600, None, SECRET),  # extended expiry
        ("vods/1.mp4", 0, "other.mp4", SECRET),  # added download name
        ("vods/1.mp4", 0, None, b"another-secret"),
    ],
)
def test_any_change_breaks_the_signature(key: str, exp_delta: int, download_name: str | None, secret: bytes) -> None:
    exp = int(time.time()) + 60
    sig = sign(SECRET, "vods/1.mp4", exp)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_signed(secret, key, exp + exp_delta, sig, download_name=download_name)


def test_expiry_is_checked_after_the_signature() -> None:
    exp = 1_000
    sig = sign(SECRET, "k", exp)
    verify_signed(SECRET, "k", exp, sig, now=999.5)
    with pytest.raises(SignatureInvalid, match="expired") as excinfo:
        verify_signed(SECRET, "k", exp, sig, now=1_000.5)
    assert excinfo.value.reason == "link expired"


@pytest.mark.parametrize("exp", ["", "soon", "1e9", None])
def test_malformed_expiry(exp: object) -> None:
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify_signed(SECRET, "k", exp, "sig")  # type: ignore[arg-type]


def test_no_secret_refuses_everything() -> None:
    with pytest.raises(StorageError, match="no signing secret"):
        verify_signed(b"", "k", 10**12, sign(b"x", "k", 10**12))


def test_derived_secret_is_stable_and_not_the_master_key() -> None:
    derived = derive_signing_secret("master-key")
    assert derived == derive_signing_secret("master-key")
    assert derived != derive_signing_secret("other-master")
    assert b"master-key" not in derived and len(derived) == 32
