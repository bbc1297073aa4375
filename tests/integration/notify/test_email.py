"""Email delivery against a real SMTP server (aiosmtpd) and a wire-level Resend fake: what arrives,
escaping, the point of no return, and how each failure is classified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reelhouse.config import ConfigError
from reelhouse.core.notify.email import (
    EmailSettings,
    MailAborted,
    MailDeferred,
    MailOutcomeUnknown,
    MailRejected,
    OutgoingMail,
    ResendTransport,
    SmtpTransport,
    open_transport,
)
from reelhouse.core.notify.templates import MailTemplates
from tests.fakes.mailbox import FakeResend, Mailbox
from tests.fakes.server import serve


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


def smtp_settings(box: Mailbox) -> EmailSettings:
    return EmailSettings(
        from_email="Vault <vault@example.org>", smtp_host=box.host, smtp_port=box.port, smtp_security="none"
    )


def mail(to: str = "ada@example.org", **overrides) -> OutgoingMail:
    fields = {"subject": "Hello", "text": "plain body\n.\nline after a lone dot", "html": "<p>html body</p>"}
    fields.update(overrides)
    return OutgoingMail(to=to, **fields)


class Commit:
    def __init__(self, allow: bool = True) -> None:
        self.allow, self.calls = allow, 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.allow


async def test_smtp_delivers_text_and_html_parts_with_our_message_id(mailbox: Mailbox) -> None:
    outgoing = mail()
    commit = Commit()
    sent = await SmtpTransport(smtp_settings(mailbox)).send(outgoing, idempotency_key="k1", commit_point=commit)
    assert commit.calls == 1 and sent.transport == "smtp" and "queued as" in (sent.provider_id or "")
    (delivered,) = await mailbox.wait_for("ada@example.org")
    assert delivered.message_id == outgoing.message_id
    assert delivered.text.splitlines() == ["plain body", ".", "line after a lone dot"]  # dot-stuffing undone
    assert "<p>html body</p>" in delivered.html
    assert delivered.sender == "vault@example.org"
    assert delivered.message["Auto-Submitted"] == "auto-generated"


async def test_refused_commit_point_sends_nothing(mailbox: Mailbox) -> None:
    with pytest.raises(MailAborted):
        await SmtpTransport(smtp_settings(mailbox)).send(mail(), idempotency_key="k", commit_point=Commit(False))
    # A following mail on a new connection arrives alone: the aborted transaction was dropped.
    await SmtpTransport(smtp_settings(mailbox)).send(
        mail(subject="second"), idempotency_key="k2", commit_point=Commit()
    )
    delivered = await mailbox.wait_for("ada@example.org")
    assert [d.subject for d in delivered] == ["second"]


async def test_refused_recipient_is_permanent_and_before_the_point_of_no_return(mailbox: Mailbox) -> None:
    mailbox.faults.refuse.add("gone@example.org")
    commit = Commit()
    with pytest.raises(MailRejected) as info:
        await SmtpTransport(smtp_settings(mailbox)).send(
            mail("gone@example.org"), idempotency_key="k", commit_point=commit
        )
    assert info.value.code == 550 and "550" in str(info.value)
    assert commit.calls == 0


async def test_deferred_message_is_transient(mailbox: Mailbox) -> None:
    mailbox.faults.defer_next = 1
    with pytest.raises(MailDeferred, match="451"):
        await SmtpTransport(smtp_settings(mailbox)).send(mail(), idempotency_key="k", commit_point=Commit())
    assert mailbox.to("ada@example.org") == []


async def test_hang_up_after_the_message_is_outcome_unknown_and_the_mail_did_arrive(mailbox: Mailbox) -> None:
    mailbox.faults.hang_up_next = 1
    with pytest.raises(MailOutcomeUnknown):
        await SmtpTransport(smtp_settings(mailbox)).send(mail(), idempotency_key="k", commit_point=Commit())
    assert len(await mailbox.wait_for("ada@example.org")) == 1


async def test_unreachable_server_is_deferred() -> None:
    settings = EmailSettings(from_email="v@example.org", smtp_host="127.0.0.1", smtp_port=1, smtp_security="none")
    with pytest.raises(MailDeferred, match="connection"):
        await SmtpTransport(settings).send(mail(), idempotency_key="k", commit_point=Commit())


def test_header_injection_and_bad_addresses_are_rejected_before_sending() -> None:
    with pytest.raises(MailRejected):
        mail(subject="hi\r\nBcc: everyone@example.org")
    with pytest.raises(MailRejected):
        mail(to="not an address")
    with pytest.raises(MailRejected):
        mail(to="a@b.c>\r\nRCPT TO:<x@y.z")


def test_templates_escape_html_and_keep_text_readable(tmp_path: Path) -> None:
    templates = MailTemplates("tests.integration.notify", "mail")
    rendered = templates.render("greeting", title='<script>alert("x")</script> & co', link="https://h/x?a=1&b=2")
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert '<script>alert("x")</script> & co' in rendered.text
    assert rendered.subject == 'About <script>alert("x")</script> & co'  # one line, as the header needs
    with pytest.raises(Exception, match="link"):
        templates.render("greeting", title="missing link")


def test_open_transport_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"FROM_EMAIL.*SMTP_HOST or RESEND_API_KEY"):
        open_transport(EmailSettings(from_email="", smtp_host="", resend_api_key=""))
    resend = open_transport(EmailSettings(from_email="v@example.org", resend_api_key="re_x"))
    assert isinstance(resend, ResendTransport)


async def test_resend_sends_once_per_idempotency_key_and_classifies_errors() -> None:
    fake = FakeResend()
    with serve(fake.app) as served:
        settings = EmailSettings(
            from_email="v@example.org", resend_api_key=fake.api_key, resend_api_url=served.base_url
        )
        transport = ResendTransport(settings)
        try:
            first = await transport.send(mail(), idempotency_key="release/1/recipient/2", commit_point=Commit())
            again = await transport.send(mail(), idempotency_key="release/1/recipient/2", commit_point=Commit())
            assert first.provider_id == again.provider_id and len(fake.sent) == 1
            body = fake.sent[0]
            assert body["to"] == ["ada@example.org"] and body["text"] and body["html"]
            fake.fail_next.append((422, {"name": "validation_error", "message": "invalid `to` field"}))
            with pytest.raises(MailRejected, match="invalid"):
                await transport.send(mail(), idempotency_key="other", commit_point=Commit())
            fake.fail_next.append((429, {"name": "rate_limit_exceeded", "message": "slow down"}))
            with pytest.raises(MailDeferred) as info:
                await transport.send(mail(), idempotency_key="other", commit_point=Commit())
            assert info.value.retry_after == 7.0
            fake.fail_next.append((500, {"name": "internal_server_error", "message": "oops"}))
            with pytest.raises(MailDeferred, match="500"):
                await transport.send(mail(), idempotency_key="other", commit_point=Commit())
            with pytest.raises(MailAborted):
                await transport.send(mail(), idempotency_key="third", commit_point=Commit(False))
            assert fake.requests == 5  # the aborted one never reached the API
        finally:
            await transport.aclose()
    with serve(fake.app) as served:
        bad_key = ResendTransport(
            EmailSettings(from_email="v@example.org", resend_api_key="wrong", resend_api_url=served.base_url)
        )
        with pytest.raises(MailDeferred, match="RESEND_API_KEY"):
            await bad_key.send(mail(), idempotency_key="k", commit_point=Commit())
        await bad_key.aclose()
