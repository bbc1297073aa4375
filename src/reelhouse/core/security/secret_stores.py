"""Every place that keeps secrets encrypted under the master key, for start-up and rotation.

Core's own (the audit chain key) is listed here; a domain adds its stores through the
`reelhouse.secrets` entry-point group, whose values are `factory(engine, master_keys)` returning
a `SecretStore` (archive: the OAuth token store). Core never imports the domain to do so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.security.audit import AuditKeyStore
from reelhouse.core.security.keys import MasterKeys

log = logging.getLogger("reelhouse.security.secrets")
ENTRY_POINT_GROUP = "reelhouse.secrets"


class SecretStore(Protocol):
    name: str

    async def seal_plaintext(self) -> int:
        """Encrypt rows still stored in plaintext; returns how many."""
        ...

    async def rewrap(self) -> tuple[int, int]:
        """Move every record to the primary key (encrypting plaintext ones); (changed, unchanged)."""
        ...

    async def key_ids_in_use(self) -> set[str]:
        """The master key ids that records are encrypted under."""
        ...


def secret_stores(engine: AsyncEngine, keys: MasterKeys) -> list[SecretStore]:
    stores: list[SecretStore] = [AuditKeyStore(engine, keys)]
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        stores.append(ep.load()(engine, keys))
    return stores


@dataclass
class RotationSummary:
    changed: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    still_in_use: set[str] = field(default_factory=set)


async def seal_all_plaintext(engine: AsyncEngine, keys: MasterKeys) -> int:
    """Start-up step: no secret stays in plaintext once a process with a key has started."""
    total = 0
    for store in secret_stores(engine, keys):
        sealed = await store.seal_plaintext()
        if sealed:
            log.info(
                "encrypted plaintext secrets at rest", extra={"component": "security", "store": store.name, "n": sealed}
            )
        total += sealed
    return total


async def rotate_all(engine: AsyncEngine, keys: MasterKeys) -> RotationSummary:
    summary = RotationSummary()
    stores = secret_stores(engine, keys)
    for store in stores:
        changed, unchanged = await store.rewrap()
        summary.changed[store.name], summary.unchanged[store.name] = changed, unchanged
    for store in stores:
        summary.still_in_use |= await store.key_ids_in_use()
    return summary
