"""HMAC-SHA256 expiring URLs for objects served by reelhouse itself (the filesystem backend).

S3 has its own presigned URLs; these cover the case where the API process serves the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from reelhouse.core.storage.base import StorageError

_SIGNING_CONTEXT = b"reelhouse/storage/signed-url/v1"


class SignatureInvalid(StorageError):
    """A signed URL was tampered with, malformed, or expired; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"signed URL rejected: {reason}")
        self.reason = reason


def sign(secret: bytes, key: str, exp: int, download_name: str | None = None) -> str:
    # Newlines cannot occur in a valid key or expiry, so the fields cannot be shifted
    # into one another to forge a different (key, exp) pair with the same MAC.
    message = f"{key}\n{exp}\n{download_name or ''}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_signed(
    secret: bytes,
    key: str,
    exp: str | int,
    sig: str,
    *,
    download_name: str | None = None,
    now: float | None = None,
) -> None:
    """Raise `SignatureInvalid` unless `sig` was made by `sign` with `secret` and is unexpired."""
    if not secret:
        raise StorageError("no signing secret configured for signed URLs")
    try:
        expires = int(exp)
    except (TypeError, ValueError):
        raise SignatureInvalid("malformed expiry") from None
    if not hmac.compare_digest(sign(secret, key, expires, download_name), str(sig)):
        raise SignatureInvalid("signature does not match")
    if expires < (time.time() if now is None else now):
        raise SignatureInvalid("link expired")


def derive_signing_secret(master_key: str) -> bytes:
    """A key for URL signing only, so a leaked signature never exposes the master key."""
    return hmac.new(master_key.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest()
