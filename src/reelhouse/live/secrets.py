"""Destination and restream keys as a store of secrets (entry point `reelhouse.secrets`):
`reelhouse admin rotate-keys` re-wraps them under the primary master key. They are always
written encrypted, so there is never plaintext to seal."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.security.crypto import Keyring
from reelhouse.core.security.keys import MasterKeys
from reelhouse.live.models import destinations, restreams


@dataclass
class LiveKeyStore:
    engine: AsyncEngine
    keys: MasterKeys
    name: str = "live-destination-keys"

    async def seal_plaintext(self) -> int:
        return 0

    async def rewrap(self) -> tuple[int, int]:
        keyring: Keyring = self.keys.keyring()
        changed = unchanged = 0
        async with self.engine.begin() as conn:
            for table in (destinations, restreams):
                rows = (await conn.execute(select(table.c.id, table.c.key_ciphertext))).all()
                for row_id, token in rows:
                    if not token:
                        continue
                    if keyring.needs_rewrap(token):
                        await conn.execute(
                            update(table).where(table.c.id == row_id).values(key_ciphertext=keyring.rewrap(token))
                        )
                        changed += 1
                    else:
                        unchanged += 1
        return changed, unchanged

    async def key_ids_in_use(self) -> set[str]:
        found: set[str] = set()
        async with self.engine.connect() as conn:
            for table in (destinations, restreams):
                for (token,) in (await conn.execute(select(table.c.key_ciphertext))).all():
                    if token:
                        found.add(Keyring.key_id_of(token))
        return found


def secret_store(engine: AsyncEngine, keys: MasterKeys) -> LiveKeyStore:
    """Entry point `reelhouse.secrets:live-destination-keys`."""
    return LiveKeyStore(engine, keys)
