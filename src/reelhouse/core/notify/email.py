"""Outgoing email: SMTP (aiosmtplib) or Resend's HTTP API (httpx), with one point of no return.

A mail is either sent or not, but a process can die while the outcome is on the wire. Both
transports call the caller's `commit_point()` at the last moment before the mail can be
delivered, and send nothing if it returns False; the caller records "sending" there (in the
same step it proves it still owns the mail), so a crash leaves a record saying exactly which
side of the line the mail was on:

- SMTP: after the server answered 354 to DATA, just before the message body and its final
  "." go out in one write. A server that never sees the "." discards the transaction (RFC
  5321 §4.1.1.4), so a crash before this point delivers nothing, and a crash after it almost
  certainly delivered (the data is in the kernel's socket buffer). `MailOutcomeUnknown` says so.
- Resend: before the POST, which carries an `Idempotency-Key`: Resend sends at most one mail
  per key within 24 h, so an unknown outcome is resolved by simply sending again.

Errors: `MailRejected` (permanent: 5xx, invalid address), `MailDeferred` (retry later),
`MailOutcomeUnknown` (after the point of no return), `MailAborted` (commit point refused).
Messages never contain the body, credentials or link tokens.
"""

from __future__ import annotations

import email.policy
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Literal, Protocol

import aiosmtplib
import httpx
from pydantic import Field

from reelhouse.config import ConfigError, SettingsSection, from_env

CommitPoint = Callable[[], Awaitable[bool]]
_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
MAX_EMAIL_LENGTH = 254


class EmailSettings(SettingsSection):
    """Mail delivery. `RESEND_API_KEY` selects Resend; otherwise `SMTP_HOST` selects SMTP."""

    email_transport: Literal["auto", "smtp", "resend"] = Field("auto", validation_alias=from_env("EMAIL_TRANSPORT"))
    from_email: str = Field("", validation_alias=from_env("FROM_EMAIL", "SMTP_FROM"))
    smtp_host: str = Field("", validation_alias=from_env("SMTP_HOST"))
    smtp_port: int = Field(587, ge=1, le=65535, validation_alias=from_env("SMTP_PORT"))
    smtp_username: str = Field("", validation_alias=from_env("SMTP_USERNAME", "SMTP_USER"))
    smtp_password: str = Field("", validation_alias=from_env("SMTP_PASSWORD", "SMTP_PASS"))
    smtp_security: Literal["starttls", "tls", "none"] = Field("starttls", validation_alias=from_env("SMTP_SECURITY"))
    smtp_timeout: float = Field(30.0, gt=0, le=600, validation_alias=from_env("SMTP_TIMEOUT"))
    resend_api_key: str = Field("", validation_alias=from_env("RESEND_API_KEY"))
    resend_api_url: str = Field("https://api.resend.com", validation_alias=from_env("RESEND_API_URL"))

    @property
    def transport_name(self) -> str | None:
        if self.email_transport != "auto":
            return self.email_transport
        if self.resend_api_key:
            return "resend"
        return "smtp" if self.smtp_host else None

    def missing(self) -> list[str]:
        """What is not configured for sending mail, by variable name (empty when ready)."""
        problems = []
        if not self.from_email:
            problems.append("FROM_EMAIL")
        elif not is_valid_address(parseaddr(self.from_email)[1]):
            problems.append("FROM_EMAIL (not an email address)")
        name = self.transport_name
        if name is None:
            problems.append("SMTP_HOST or RESEND_API_KEY")
        elif name == "smtp" and not self.smtp_host:
            problems.append("SMTP_HOST")
        elif name == "resend" and not self.resend_api_key:
            problems.append("RESEND_API_KEY")
        return problems


def normalize_address(address: str) -> str:
    return address.strip().lower()


def is_valid_address(address: str) -> bool:
    return len(address) <= MAX_EMAIL_LENGTH and bool(_EMAIL.match(address))


class MailError(Exception):
    """Base of delivery errors; `str()` is safe to store and show."""


class MailRejected(MailError):
    """The server or provider refused this mail for good (unknown mailbox, policy, bad input)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class MailDeferred(MailError):
    """Not sent this time (connection, 4xx, provider outage); `retry_after` seconds if told."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class MailOutcomeUnknown(MailError):
    """The connection failed after the point of no return: the mail was probably delivered."""


class MailAborted(MailError):
    """`commit_point()` refused (someone else owns this mail now); nothing was sent."""


@dataclass(frozen=True)
class OutgoingMail:
    to: str
    subject: str
    text: str
    html: str
    message_id: str = field(default_factory=lambda: make_msgid(domain="reelhouse.invalid"))
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "\r" in self.subject or "\n" in self.subject:
            raise MailRejected("subject must be one line")
        if not is_valid_address(self.to):
            raise MailRejected("recipient is not a valid email address")


@dataclass(frozen=True)
class SentMail:
    transport: str
    provider_id: str | None
    """Resend's email id, or the SMTP server's 250 reply text."""


class MailTransport(Protocol):
    name: str
    idempotent: bool
    """True when sending the same idempotency key twice delivers one mail (retry after unknown)."""

    async def send(self, mail: OutgoingMail, *, idempotency_key: str, commit_point: CommitPoint) -> SentMail: ...

    async def aclose(self) -> None: ...


def build_mime(mail: OutgoingMail, sender: str) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = mail.message_id
    message["Auto-Submitted"] = "auto-generated"
    for name, value in mail.headers.items():
        message[name] = value
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: lines starting with "." doubled, CRLF endings, the final "." line."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def _smtp_failure(code: int, message: str, stage: str) -> MailError:
    text = f"SMTP {stage} refused: {code} {message.strip()[:200]}"
    return MailRejected(text, code) if 500 <= code < 600 else MailDeferred(text)


class SmtpTransport:
    name = "smtp"
    idempotent = False

    def __init__(self, settings: EmailSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.sender = settings.from_email
        self._tls_context = tls_context

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            timeout=s.smtp_timeout,
            tls_context=self._tls_context,
        )

    async def send(self, mail: OutgoingMail, *, idempotency_key: str, commit_point: CommitPoint) -> SentMail:
        body = _dot_stuffed(build_mime(mail, self.sender).as_bytes())
        client = self._client()
        try:
            await client.connect()
            if self.settings.smtp_username:
                await client.login(self.settings.smtp_username, self.settings.smtp_password)
            await client.mail(parseaddr(self.sender)[1])
            await client.rcpt(mail.to)
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise _smtp_failure(start.code, start.message, "DATA")
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise MailDeferred(f"SMTP login failed ({exc.code}); check SMTP_USERNAME / SMTP_PASSWORD") from None
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise _smtp_failure(exc.code, exc.message, "MAIL/RCPT") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            where = f"{self.settings.smtp_host}:{self.settings.smtp_port}"
            raise MailDeferred(f"SMTP connection to {where} failed: {exc}") from None
        if not await commit_point():
            client.close()  # no final "." was sent: the server drops the transaction
            raise MailAborted("mail is owned by another sender; nothing sent")
        protocol = client.protocol
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            # write() then read_response() with no await between: the reply cannot arrive
            # before aiosmtplib expects it.
            protocol.write(body)
            reply = await protocol.read_response(timeout=self.settings.smtp_timeout)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise MailOutcomeUnknown(f"connection lost after the message was sent, before the reply: {exc}") from None
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
        if reply.code != 250:
            raise _smtp_failure(reply.code, reply.message, "message")
        return SentMail(self.name, reply.message.strip()[:200] or None)

    async def aclose(self) -> None:
        return None


class ResendTransport:
    name = "resend"
    idempotent = True

    def __init__(self, settings: EmailSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.sender = settings.from_email
        self._client = httpx.AsyncClient(
            base_url=settings.resend_api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {settings.resend_api_key}"},
            timeout=settings.smtp_timeout,
            transport=transport,
        )

    async def send(self, mail: OutgoingMail, *, idempotency_key: str, commit_point: CommitPoint) -> SentMail:
        if not await commit_point():
            raise MailAborted("mail is owned by another sender; nothing sent")
        payload = {
            "from": self.sender,
            "to": [mail.to],
            "subject": mail.subject,
            "html": mail.html,
            "text": mail.text,
            "headers": {"Message-ID": mail.message_id, **mail.headers},
        }
        try:
            response = await self._client.post(
                "/emails", json=payload, headers={"Idempotency-Key": idempotency_key[:256]}
            )
        except httpx.HTTPError as exc:
            raise MailDeferred(f"Resend unreachable: {type(exc).__name__}") from None
        if response.status_code == 200:
            return SentMail(self.name, str(response.json().get("id") or "") or None)
        detail = _resend_error(response)
        if response.status_code == 429:
            retry = response.headers.get("retry-after", "")
            raise MailDeferred(f"Resend rate limit: {detail}", float(retry) if retry.isdigit() else None)
        if response.status_code in (401, 403):
            raise MailDeferred(f"Resend refused the API key ({response.status_code}); check RESEND_API_KEY")
        if response.status_code in (400, 422):
            raise MailRejected(f"Resend rejected the mail: {detail}", response.status_code)
        raise MailDeferred(f"Resend error {response.status_code}: {detail}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _resend_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message") or body.get("name") or body)[:200] if isinstance(body, dict) else str(body)[:200]


def open_transport(settings: EmailSettings) -> MailTransport:
    """The configured transport; `ConfigError` naming the variables when mail is not set up."""
    missing = settings.missing()
    if missing:
        raise ConfigError("email is not configured: set " + ", ".join(missing))
    if settings.transport_name == "resend":
        return ResendTransport(settings)
    return SmtpTransport(settings)
