"""Vault audit entries in core's hash-chained log, written in the transaction of the change they
record (LegacyVideo audited after committing, so a failed audit left a changed state behind).

Entries name people by row id (`user:5`, `verifier:12`, `recipient:3`), never by email or
free text; where an address matters (an invitation), a keyed hash of it lets an investigator
who already knows the address find its entries without the log disclosing it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.security.audit import append_in

_EMAIL_CONTEXT = b"reelhouse/vault/audit-email/v1"


def email_hash(secret: str, email: str) -> str:
    key = hmac.new(secret.encode(), _EMAIL_CONTEXT, hashlib.sha256).digest()
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()[:16]


async def record(conn: AsyncConnection, actor: str, action: str, target: str | None = None, **details: Any) -> None:
    await append_in(conn, actor, f"vault.{action}", target, {k: v for k, v in details.items() if v is not None})
