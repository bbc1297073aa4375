"""The vault in the browser, owner, verifier and recipient in three browser contexts (plus a
second verifier who only has links): create a plan, upload a clip, invite two verifiers who
accept; a request is approved, the owner vetoes it from the mail's link; again without veto,
and after the waiting period the recipient opens the mail's link and plays the video, seeking
to the middle."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.harness import PASSWORD, ConsoleErrors, Server, run_server
from tests.fakes.mailbox import Mailbox
from tests.media_fixtures import make_clip

TOKEN_LINK = re.compile(r"https?://[^/\s]+(/vault/[a-z]+#token=rhv_[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def vault_server(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[Server]:
    env = {
        "MASTER_ENCRYPTION_KEY": "e2e-vault-master-key-0123456789abcdef",
        "FROM_EMAIL": "vault@example.org",
        "APP_URL": "http://vault.example",
        "VAULT_ENABLED": "true",
        "VAULT_MIN_WAITING_PERIOD": "1s",
        "VAULT_TICK_INTERVAL": "1s",
        "VAULT_SEGMENT_BYTES": "65536",
        "HW_ACCEL": "none",
        **mailbox.env(),
    }
    with run_server(tmp_path_factory.mktemp("e2e-vault"), env) as served:
        yield served


def link_in(box: Mailbox, to: str, subject: str, count: int = 1, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in box.to(to) if subject in m.subject]
        if len(found) >= count:
            match = TOKEN_LINK.search(found[count - 1].text)
            assert match, found[count - 1].text
            return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no mail {subject!r} #{count} to {to}: {[m.subject for m in box.to(to)]}")


@pytest.fixture
def contexts(browser: Any, vault_server: Server) -> Iterator[Any]:
    opened: list[tuple[Any, ConsoleErrors]] = []

    def open_context(username: str | None) -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=vault_server.url)
        context.set_default_timeout(30_000)
        page = context.new_page()
        opened.append((context, ConsoleErrors(page)))
        if username:
            page.goto("/login")
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(vault_server.url + "/")
        return page

    yield open_context
    problems = [e for _, w in opened for e in w.unexpected()]
    for context, _ in opened:
        context.close()
    assert not problems, "browser console errors:\n" + "\n".join(problems)


def test_owner_verifier_and_recipient_in_three_browsers(
    contexts, vault_server: Server, mailbox: Mailbox, tmp_path: Path
):
    owner = contexts("viewer")
    owner.goto("/vault")
    owner.get_by_label("Title").fill("For my family")
    owner.get_by_label(re.compile("^Your email")).fill("owner@example.org")
    owner.get_by_label("Verifiers").fill("2")
    owner.get_by_label("Approvals needed").fill("2")
    owner.get_by_label(re.compile("^Waiting period")).fill("3")
    owner.get_by_role("button", name="Create plan").click()
    owner.wait_for_url(re.compile(r"/vault/plans/\d+$"))

    owner.get_by_label("New message title").fill("Happy birthday")
    owner.get_by_label(re.compile("^Recipients")).fill("rita@example.org")
    owner.get_by_role("button", name="Add message").click()
    expect(owner.get_by_test_id("messages")).to_contain_text("rita@example.org")
    clip = make_clip(tmp_path / "clip.mp4", duration=6.0)
    owner.get_by_label("Upload video or audio").set_input_files(str(clip))
    expect(owner.locator(".msg-status").first).to_have_text("ready", timeout=90_000)

    for email in ("vera@example.org", "victor@example.org"):
        owner.get_by_label("Invite a verifier by email").fill(email)
        owner.get_by_role("button", name="Invite").click()
        expect(owner.get_by_test_id("verifiers")).to_contain_text(email)

    vera = contexts("operator")  # accepts while signed in: her account becomes her verifier identity
    vera.goto(link_in(mailbox, "vera@example.org", "trusted verifier"))
    vera.get_by_role("button", name="Accept").click()
    expect(vera.get_by_test_id("accepted")).to_be_visible()
    victor = contexts(None)  # no account: his verifier link is all he has
    victor.goto(link_in(mailbox, "victor@example.org", "trusted verifier"))
    victor.get_by_role("button", name="Accept").click()
    victor_link = victor.get_by_test_id("verifier-link").get_attribute("href")
    assert victor_link and "#token=rhv_" in victor_link

    def ask_and_approve() -> None:
        vera.goto("/vault/verifying")
        vera.get_by_role("button", name="Request release").click()
        expect(vera.get_by_test_id("request-status")).to_contain_text("pending, 1 of 2")
        victor.goto(victor_link)
        victor.reload()
        victor.get_by_role("button", name="Approve release").click()
        expect(victor.get_by_test_id("request-status")).to_contain_text("waiting, 2 of 2")

    ask_and_approve()
    owner.goto(link_in(mailbox, "owner@example.org", "will be released"))
    owner.get_by_role("button", name="Veto this release").click()
    expect(owner.get_by_test_id("vetoed")).to_be_visible()
    time.sleep(4)  # past the waiting period: nothing goes out
    assert mailbox.to("rita@example.org") == []

    ask_and_approve()
    rita = contexts(None)
    rita.goto(link_in(mailbox, "rita@example.org", "message", timeout=60))
    video = rita.locator("video[data-message]")
    expect(video).to_be_visible()
    rita.wait_for_function("document.querySelector('video').readyState >= 1")
    duration = rita.evaluate("document.querySelector('video').duration")
    assert 5.5 <= duration <= 6.5
    rita.evaluate(
        """() => new Promise((resolve) => {
            const v = document.querySelector('video');
            v.muted = true;
            v.addEventListener('seeked', resolve, { once: true });
            v.currentTime = v.duration / 2;
        })"""
    )
    rita.evaluate("document.querySelector('video').play()")
    rita.wait_for_function(
        "(() => { const v = document.querySelector('video'); return v.currentTime > v.duration / 2 + 0.3; })()"
    )
    assert len([m for m in mailbox.to("rita@example.org") if "message" in m.subject]) == 1
    owner.goto("/vault")
    owner.get_by_role("link", name="For my family").click()
    expect(owner.get_by_test_id("plan-status")).to_have_text("released")
