"""Fenced outputs: files a run writes to storage, safe against a run that lost its lease.

Object stores have no compare-and-set a portable backend can rely on, so safety comes from
two rules instead:
- keys are scoped to the run (`<prefix>/run-<fence>/...`): two runs of one task never write
  the same key, so a stale run cannot overwrite what the current run wrote;
- every write and delete first checks the run still holds its task, and the outputs become
  visible only when the run publishes them in a fenced transaction (the caller records where
  they are, e.g. an asset's master key): a compare-and-set on the fencing token. A stale run's
  deletes are refused, so it cannot remove what another run published either.
A stale run that passed its check just before losing the lease can still leave a file in its
own scope; nothing points at it, and the publishing run sweeps other runs' scopes.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from reelhouse.core.storage import ByteSource, ObjectInfo, Storage

if TYPE_CHECKING:
    from reelhouse.core.jobs.context import TaskContext

RUN_SCOPE = "run-"


class FencedOutputs:
    def __init__(self, ctx: TaskContext, storage: Storage, prefix: str) -> None:
        self.ctx = ctx
        self.storage = storage
        self.prefix = prefix.rstrip("/")
        self.scope = f"{self.prefix}/{RUN_SCOPE}{ctx.fence}"
        self.written: list[str] = []

    def key(self, relative: str) -> str:
        return f"{self.scope}/{relative}"

    async def put(self, relative: str, source: ByteSource) -> ObjectInfo:
        key = self.key(relative)
        await self.ctx.check_lease(f"write {key}")
        info = await self.storage.put(key, source)
        self.written.append(key)
        return info

    async def discard(self) -> int:
        """Delete what this run wrote (it failed or was interrupted). Refused if the run lost
        its task: by then what it wrote may be published by the run that took over."""
        if not self.written:
            return 0
        await self.ctx.check_lease(f"delete {len(self.written)} outputs under {self.scope}")
        for key in reversed(self.written):
            await self.storage.delete(key)
        count, self.written = len(self.written), []
        return count

    async def delete_all(self) -> int:
        """Delete every run's outputs under the prefix (an operator's cancel), fenced."""
        await self.ctx.check_lease(f"delete everything under {self.prefix}")
        keys = await self._keys(self.prefix + "/")
        for key in keys:
            await self.storage.delete(key)
        self.written = []
        return len(keys)

    async def sweep_other_runs(self, keep: str) -> int:
        """After publishing: delete other runs' scopes under the prefix (stale or lost runs'
        leftovers), keeping the scope `keep` that is now published. Fenced."""
        await self.ctx.check_lease(f"sweep old runs under {self.prefix}")
        stale = [key for key in await self._keys(self.prefix + "/") if _scope_of(self.prefix, key) not in (None, keep)]
        for key in stale:
            await self.storage.delete(key)
        return len(stale)

    async def _keys(self, prefix: str) -> list[str]:
        return [info.key async for info in self.storage.list(prefix)]  # read to the end


def _scope_of(prefix: str, key: str) -> str | None:
    """`<prefix>/run-N` for a key inside a run scope, None for anything else under the prefix."""
    rest = key[len(prefix) + 1 :]
    first = rest.split("/", 1)[0]
    if first.startswith(RUN_SCOPE) and first[len(RUN_SCOPE) :].isdigit():
        return posixpath.join(prefix, first)
    return None
