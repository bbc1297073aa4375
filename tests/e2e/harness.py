"""Browser-test harness: a real `reelhouse serve` subprocess on SQLite and Debian's Chromium
driven by Playwright, with screenshots, axe-core checks and console-error capture."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", REPO / "test-artifacts" / "screenshots"))
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# As the machine notes say: no sandbox as root, and no background calls to Google's hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
SCHEMES = ("light", "dark")
PASSWORD = "correct horse battery"
USERS = {"admin": "admin", "operator": "operator", "viewer": "viewer"}


def run_async(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync test code: in a thread of its own, because
    Playwright's sync API keeps an event loop running on the test thread."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _create_users(database_url: str) -> None:
    from reelhouse.core.db.engine import create_engine
    from reelhouse.core.db.migrate import run_migrations
    from reelhouse.core.security.users import create_user

    engine = create_engine(database_url)
    try:
        await run_migrations(engine)
        for name, role in USERS.items():
            await create_user(engine, name, PASSWORD, role)
    finally:
        await engine.dispose()


@dataclass
class Server:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(role, PASSWORD), timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def run_server(root: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    data = root / "data"
    data.mkdir(parents=True)
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{data / 'reelhouse.db'}"
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "DATABASE_URL": database_url,
        "HTTP_ADDR": f"127.0.0.1:{port}",
        "RATE_LIMIT_ENABLED": "false",
        "JOB_POLL_INTERVAL": "0.2",
        "PROGRESS_SAVE_INTERVAL": "0.3",
        "WEB_NODE_MODULES": str(REPO / "node_modules"),
        "LOG_LEVEL": "info",
        **(extra_env or {}),
    }
    run_async(_create_users(database_url))
    server = Server(url=f"http://127.0.0.1:{port}", data_dir=data, env=env, log_path=root / "serve.log")
    with open(server.log_path, "wb") as log:
        command = [str(Path(sys.executable).parent / "reelhouse"), "serve"]
        server.process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(server)
            yield server
        finally:
            server.process.terminate()
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def _wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"reelhouse serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"reelhouse serve not ready after {timeout}s:\n{server.log_tail()}")


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


class ConsoleErrors:
    """Collects console errors and uncaught exceptions of a page; tests assert it stays empty."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def allow(self, fragment: str) -> None:
        """An expected error, such as the browser logging a 403 the test provoked on purpose."""
        self.allowed.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(fragment in e for fragment in self.allowed)]


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current page (WCAG 2.x A/AA rules)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """async () => {
            const tags = ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice'];
            const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


# The outermost elements that stick out to the right of the viewport (none on a page that fits).
OVERFLOW_JS = """() => {
    const limit = document.documentElement.clientWidth + 1;
    if (document.documentElement.scrollWidth <= limit) return null;
    const out = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > limit);
    return out.filter(e => !out.includes(e.parentElement)).slice(0, 5)
        .map(e => `${e.tagName.toLowerCase()}.${e.className} (${Math.round(e.getBoundingClientRect().right)}px)`);
}"""


def screenshot_all(page: Any, name: str) -> list[Path]:
    """The page at 1280x800 and 390x844, light and dark: four files under SCREENSHOTS; each
    combination is also checked with axe-core (contrast differs between the themes)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    problems = []
    original = page.viewport_size
    for viewport, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            path = SCREENSHOTS / f"{name}-{viewport}-{scheme}.png"
            page.screenshot(path=str(path), full_page=True)
            saved.append(path)
            overflow = page.evaluate(OVERFLOW_JS)
            if overflow:
                problems.append(f"{viewport}/{scheme}: wider than the viewport: {overflow}")
            problems += [f"{viewport}/{scheme}: {v}" for v in axe_violations(page)]
    page.set_viewport_size(original)
    page.emulate_media(color_scheme="light")
    assert not problems, f"{name}: " + "\n".join(map(str, problems))
    return saved
