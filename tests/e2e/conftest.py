"""Fixtures for the browser tests: one `reelhouse serve` on SQLite per session, Debian's
Chromium through Playwright (never a downloaded browser), signed-in pages per role.

Chromium missing is a failure with `CI` set and a skip otherwise, like PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, PASSWORD, ConsoleErrors, Server, chromium_available, run_server
from tests.fakes.hls_origin import HlsOrigin
from tests.fakes.server import serve

IN_CI = bool(os.environ.get("CI"))


def _require_chromium() -> None:
    if chromium_available():
        return
    message = f"Chromium is required for the browser tests and {CHROMIUM} is missing (make system-deps installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def hls_origin() -> Iterator[tuple[HlsOrigin, str]]:
    """A loopback HLS origin standing in for Twitch's video CDN (the archive downloads from it)."""
    origin = HlsOrigin(rate_per_connection=400_000)
    with serve(origin) as served:
        yield origin, served.base_url


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, hls_origin: tuple[HlsOrigin, str]) -> Iterator[Server]:
    env = {
        "TWITCH_VIDEO_URL_TEMPLATE": f"{hls_origin[1]}/videos/{{id}}/index.m3u8",
        # Emote images from this server instead of Twitch's CDN: the tests run offline.
        "WEB_EMOTE_URL": "/static/web/favicon.svg?emote={id}",
    }
    with run_server(tmp_path_factory.mktemp("e2e"), env) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module, not per session: Playwright's sync API keeps an event loop running in this
    thread while it is open, and the async tests that run after the browser tests need the
    thread to themselves."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


def sign_in(page: Any, server: Server, username: str, password: str = PASSWORD) -> None:
    page.goto(server.url + "/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/")


@pytest.fixture
def open_page(browser: Any, server: Server) -> Iterator[Callable[..., tuple[Any, ConsoleErrors]]]:
    """`open_page(role)`: a new browser context signed in as that role (None: signed out),
    with its console errors collected; each test asserts there were none."""
    contexts: list[Any] = []
    watchers: list[ConsoleErrors] = []

    def opener(username: str | None = "admin") -> tuple[Any, ConsoleErrors]:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.url)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        errors = ConsoleErrors(page)
        watchers.append(errors)
        if username is not None:
            sign_in(page, server, username)
        return page, errors

    yield opener
    problems = [e for w in watchers for e in w.unexpected()]
    for context in contexts:
        context.close()
    assert not problems, "browser console errors:\n" + "\n".join(problems)


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path
