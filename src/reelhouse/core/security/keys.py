"""Where the master key comes from, so that secrets at rest are encrypted with nothing configured.

`MASTER_ENCRYPTION_KEY` (or `ENCRYPTION_KEY`) wins when it is set. Otherwise the first process
that needs a key creates `DATA_DIR/master.key`: 32 random bytes, base64, mode 0600, created with
O_EXCL so two processes starting at once agree on one key. The file never reaches a log.

The key file may hold more than one key, one per line: the first encrypts, the others only
decrypt (they are what `reelhouse admin rotate-keys --new-key` leaves behind until every record
has been re-wrapped and `--drop-old` removes them). `MASTER_ENCRYPTION_KEY_PREVIOUS` plays that
role for a key given in the environment. When both an environment key and a key file exist, the
file's keys are kept as previous keys, so switching from the generated key to a managed one
loses nothing: `rotate-keys` then moves every record to the managed key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from reelhouse.core.security.crypto import KEY_BYTES, CryptoError, Keyring, derive_key

KEY_FILE_NAME = "master.key"
_HEADER = "# reelhouse master keys: the first line encrypts, later lines only decrypt. Back this file up.\n"


def generate_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def key_file_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEY_FILE_NAME


def read_key_file(path: Path) -> list[str]:
    """The keys in the file, primary first (comments and blank lines skipped)."""
    text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the file atomically (write a 0600 sibling, fsync, rename): a crash leaves the old
    file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(_HEADER + "".join(f"{key}\n" for key in keys))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def ensure_key_file(path: Path) -> list[str]:
    """The file's keys, creating the file with one new key if it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; use theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(_HEADER + generate_key_text() + "\n")
                out.flush()
                os.fsync(out.fileno())
    keys = read_key_file(path)
    if not keys:
        raise CryptoError(f"{path} holds no key; restore it from your backup")
    return keys


class MasterKeys:
    """The process's keyring, loaded on first use (so building settings or a runtime in a test
    creates no file) and cached."""

    def __init__(self, security: object, data_dir: Path) -> None:
        self._primary_env = (getattr(security, "master_encryption_key", "") or "").strip()
        previous = getattr(security, "master_encryption_key_previous", None) or []
        self._previous_env = [p for p in (previous.split(",") if isinstance(previous, str) else previous) if p.strip()]
        self.key_file = key_file_path(data_dir)
        self._keyring: Keyring | None = None

    @classmethod
    def from_settings(cls, settings: object) -> MasterKeys:
        security = getattr(settings, "security", settings)
        server = getattr(settings, "server", None)
        return cls(security, Path(getattr(server, "data_dir", "data")))

    @property
    def environment_secret(self) -> str:
        """The key text from the environment (vod-tender rows were encrypted with it as is)."""
        return self._primary_env

    @property
    def uses_key_file(self) -> bool:
        return not self._primary_env

    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = self._load()
        return self._keyring

    def reload(self) -> Keyring:
        self._keyring = None
        return self.keyring()

    def _load(self) -> Keyring:
        if self._primary_env:
            file_keys = read_key_file(self.key_file) if self.key_file.exists() else []
            return Keyring.from_secrets(self._primary_env, [*self._previous_env, *file_keys])
        primary, *older = ensure_key_file(self.key_file)
        return Keyring.from_secrets(primary, [*older, *self._previous_env])

    def subkey(self, purpose: str) -> bytes:
        """A key for one purpose (audit chain, links...) derived from the primary master key, so
        no purpose ever sees the master key itself."""
        return derive_subkey(self.primary_secret(), purpose)

    def primary_secret(self) -> str:
        if self._primary_env:
            return self._primary_env
        return ensure_key_file(self.key_file)[0]


def derive_subkey(secret: str, purpose: str) -> bytes:
    return hmac.new(derive_key(secret), f"reelhouse subkey|{purpose}".encode(), hashlib.sha256).digest()
