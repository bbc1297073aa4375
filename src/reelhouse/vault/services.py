"""What the vault's handlers and routes share, built once by plugin.py and passed in."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from reelhouse.config import Settings
from reelhouse.core.notify.email import EmailSettings, MailTransport, open_transport
from reelhouse.core.notify.templates import MailTemplates
from reelhouse.core.security.crypto import Keyring
from reelhouse.core.security.ratelimit import SlidingWindowLimiter
from reelhouse.core.security.streaming import new_data_key
from reelhouse.core.storage import Storage, open_storage
from reelhouse.vault.settings import VaultSettings
from reelhouse.vault.store import VaultStore


def key_context(message_id: int) -> str:
    """Associated data of a message's wrapped data key: a key copied to another row fails."""
    return f"vault|video_messages|{message_id}|data_key"


@dataclass
class Limits:
    """The seed's limits, per process (a multi-node deployment enforces them per node)."""

    auth: SlidingWindowLimiter
    upload: SlidingWindowLimiter
    release: SlidingWindowLimiter
    enabled: bool = True

    @classmethod
    def from_settings(cls, settings: VaultSettings, enabled: bool) -> Limits:
        return cls(
            SlidingWindowLimiter(settings.auth_rate_limit, 60),
            SlidingWindowLimiter(settings.upload_rate_limit, 3600),
            SlidingWindowLimiter(settings.release_rate_limit, 3600),
            enabled,
        )


@dataclass
class VaultServices:
    runtime_settings: Settings
    settings: VaultSettings
    email: EmailSettings
    keyring: Keyring
    store: VaultStore
    templates: MailTemplates
    limits: Limits
    # Storage clients and mail transports belong to the event loop that opened them.
    _storages: dict[Any, Storage] = field(default_factory=dict)
    _transports: dict[Any, MailTransport] = field(default_factory=dict)

    @property
    def audit_secret(self) -> str:
        return self.runtime_settings.security.master_encryption_key

    def storage(self) -> Storage:
        loop = asyncio.get_running_loop()
        if loop not in self._storages:
            self._storages[loop] = open_storage(self.runtime_settings)
        return self._storages[loop]

    def mail_transport(self) -> MailTransport:
        loop = asyncio.get_running_loop()
        if loop not in self._transports:
            self._transports[loop] = open_transport(self.email)
        return self._transports[loop]

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        storage, transport = self._storages.pop(loop, None), self._transports.pop(loop, None)
        if storage is not None:
            await storage.aclose()
        if transport is not None:
            await transport.aclose()

    def new_wrapped_key(self, message_id: int) -> tuple[bytes, str, str]:
        """A fresh data key: (key, wrapped form to store, master key id)."""
        key = new_data_key()
        wrapped = self.keyring.encrypt(key, key_context(message_id))
        return key, wrapped, self.keyring.key_id_of(wrapped)

    def unwrap_key(self, message: Any) -> bytes:
        return self.keyring.decrypt(message.wrapped_key, key_context(message.id))

    @staticmethod
    def random_suffix() -> str:
        return os.urandom(6).hex()
