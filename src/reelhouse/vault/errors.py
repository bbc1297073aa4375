"""The vault's errors: an HTTP status plus LegacyVideo's error codes (REQUEST_EXISTS,
ALREADY_RESPONDED, INVALID_TOKEN...), rendered by core as `{"error", "status", "code"}`."""

from __future__ import annotations

from fastapi import HTTPException


class VaultError(HTTPException):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code


def not_found(what: str) -> VaultError:
    return VaultError(404, "NOT_FOUND", f"{what} not found")


def conflict(code: str, message: str) -> VaultError:
    return VaultError(409, code, message)


def invalid_token() -> VaultError:
    return VaultError(401, "INVALID_TOKEN", "link is invalid, used, revoked or expired")
