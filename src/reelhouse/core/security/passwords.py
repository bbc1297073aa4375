"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendations).

A check costs ~100 ms of CPU (on four argon2 lanes, each a thread). It runs in a small dedicated
thread pool (argon2-cffi releases the GIL while hashing), never on the event loop that also runs
heartbeats and the chat recorder. The pool's threads run at the lowest CPU priority (Linux
nice 19, inherited by argon2's lane threads): on a small machine a storm of checks would
otherwise take the cores from the event loop and delay every other request. When more checks
are waiting than the queue allows, `PasswordHasherBusy` is raised so a login storm is answered
with 429 instead of an ever longer queue.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

T = TypeVar("T")
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this when the user does not exist keeps the timing of "no such user"
    and "wrong password" alike, so login responses do not reveal which usernames exist. Made on
    first use: a hash costs ~100 ms, which every command and worker would otherwise pay at import."""
    return _hasher.hash("reelhouse-timing-equaliser")


class PasswordHasherBusy(Exception):
    """Too many password checks are already waiting."""


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if len(password) > MAX_PASSWORD_LENGTH:
        password = password[:MAX_PASSWORD_LENGTH]  # same cost as any other wrong password
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _lowest_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only (Linux)
    except (AttributeError, OSError):
        pass  # elsewhere the threads keep the process's priority


class PasswordWorker:
    """Runs argon2 off the event loop on `threads` threads, with at most `queue` checks waiting."""

    def __init__(self, threads: int = 1, queue: int = 64) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2", initializer=_lowest_priority)
        self._slots = threads + queue
        self._in_flight = 0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._in_flight >= self._slots:
            raise PasswordHasherBusy("too many password checks in progress; retry shortly")
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._in_flight -= 1

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return bool(await self._run(verify_password, password_hash, password))

    async def hash(self, password: str) -> str:
        check_password_rules(password)
        return str(await self._run(_hasher.hash, password))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
