"""A real SMTP server (aiosmtpd) on loopback that keeps every delivered mail, plus a wire-level
fake of Resend's `POST /emails` (with its Idempotency-Key semantics).

`Mailbox` faults are set per test: refuse given recipients (550), defer the message (451),
hang up after receiving a message without replying (the "outcome unknown" case), and slow down
RCPT so a batch of mails takes long enough to kill a worker in the middle of it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

LINK = re.compile(r"https?://[^\s\"'<>]+")


@dataclass
class Delivered:
    to: list[str]
    sender: str
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def part(self, subtype: str) -> str:
        for part in self.message.walk():
            if part.get_content_type() == f"text/{subtype}":
                return str(part.get_content())
        raise AssertionError(f"no text/{subtype} part in {self.subject!r}")

    @property
    def text(self) -> str:
        return self.part("plain")

    @property
    def html(self) -> str:
        return self.part("html")

    def links(self) -> list[str]:
        return LINK.findall(self.text)


@dataclass
class Faults:
    refuse: set[str] = field(default_factory=set)
    defer_next: int = 0
    hang_up_next: int = 0
    rcpt_delay: float = 0.0


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.box.faults.rcpt_delay:
            await asyncio.sleep(self.box.faults.rcpt_delay)
        if address.lower() in self.box.faults.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        faults = self.box.faults
        if faults.defer_next > 0:
            faults.defer_next -= 1
            return "451 4.3.0 try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.box._deliver(Delivered([a.lower() for a in envelope.rcpt_tos], envelope.mail_from, message))
        if faults.hang_up_next > 0:
            faults.hang_up_next -= 1
            server.transport.abort()
        return "250 2.0.0 queued as " + uuid.uuid4().hex[:10]


class Mailbox:
    def __init__(self) -> None:
        self.faults = Faults()
        self.delivered: list[Delivered] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.host = "127.0.0.1"
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)

    def start(self) -> Mailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def _deliver(self, item: Delivered) -> None:
        with self._arrived:
            self.delivered.append(item)
            self._arrived.notify_all()

    def to(self, address: str) -> list[Delivered]:
        with self._lock:
            return [d for d in self.delivered if address.lower() in d.to]

    def env(self) -> dict[str, str]:
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port), "SMTP_SECURITY": "none"}

    async def wait_for(self, address: str, count: int = 1, timeout: float = 30.0, subject: str = "") -> list[Delivered]:
        """Mails to `address` (whose subject contains `subject`), once at least `count` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.to(address) if subject in d.subject]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                subjects = [d.subject for d in self.to(address)]
                raise AssertionError(f"{count} mail(s) to {address} ({subject!r}) not delivered; got {subjects}")
            await asyncio.sleep(0.05)


class FakeResend:
    """`POST /emails` as Resend documents it: Bearer key, JSON body, `{"id"}` back; the same
    Idempotency-Key within 24 h returns the first response without sending again."""

    def __init__(self, api_key: str = "re_test_key") -> None:
        self.api_key = api_key
        self.sent: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_next: list[tuple[int, dict[str, Any]]] = []
        self._by_key: dict[str, str] = {}
        self.app = FastAPI()

        @self.app.post("/emails")
        async def send(request: Request, authorization: str = Header(""), idempotency_key: str = Header("")):
            self.requests += 1
            if authorization != f"Bearer {self.api_key}":
                return JSONResponse({"name": "validation_error", "message": "API key is invalid"}, status_code=403)
            if self.fail_next:
                status, body = self.fail_next.pop(0)
                return JSONResponse(body, status_code=status, headers={"retry-after": "7"} if status == 429 else {})
            if idempotency_key and idempotency_key in self._by_key:
                return {"id": self._by_key[idempotency_key]}
            body = await request.json()
            if not body.get("to") or not body.get("subject"):
                return JSONResponse({"name": "validation_error", "message": "missing to/subject"}, status_code=422)
            email_id = str(uuid.uuid4())
            self.sent.append(body)
            if idempotency_key:
                self._by_key[idempotency_key] = email_id
            return {"id": email_id}
