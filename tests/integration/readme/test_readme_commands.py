"""README.md's "Using it" commands, run as written against a real `reelhouse serve` (fake Twitch,
a loopback HLS origin), once from the instance directory and once from another directory.

The commands are read from README.md itself, so the README and this test cannot drift: a new
`.venv/bin/reelhouse` line in the README fails here until the test knows how to run it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import media_fixtures
from tests.fakes.hls_origin import HlsOrigin, generate_hls
from tests.fakes.server import serve

REPO = Path(__file__).resolve().parents[3]
REELHOUSE = str(Path(sys.executable).with_name("reelhouse"))
VOD_ID = "2212345678"
PASSWORD = "readme password 42"
# Every reelhouse command of the README's "Using it" section this test runs, by its words after
# `reelhouse` (long-running ones are started and stopped; see `run_all`).
KNOWN = {
    "admin create-user alice --role admin",
    "status",
    "jobs list --status failed",
    "tasks list --status dead",
    "worker",
    "admin audit verify",
    "vod list",
    f"vod add {VOD_ID} --wait",
    f"chat export {VOD_ID} --format jsonl",
    "encode clip.mp4 --profile hls-default --wait",
}


def readme_commands() -> list[str]:
    section = REPO.joinpath("README.md").read_text().split("## Using it", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        match = re.match(r"\s*(?:\S+=\S+\s+)*\.venv/bin/reelhouse\s+(.*?)\s*(?:#.*)?$", line)
        if match:
            commands.append(match.group(1))
    return commands


def test_the_readme_lists_only_commands_this_test_runs():
    listed = readme_commands()
    assert listed, "README.md has no `.venv/bin/reelhouse` commands under 'Using it'"
    assert set(listed) <= KNOWN, f"commands the README shows that this test does not run: {set(listed) - KNOWN}"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(words: str, cwd: Path, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REELHOUSE, *words.split()], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=240
    )


@pytest.mark.slow
def test_readme_commands_work_from_the_instance_and_from_another_directory(tmp_path, twitch, twitch_server):
    instance, elsewhere = tmp_path / "instance", tmp_path / "elsewhere"
    instance.mkdir()
    elsewhere.mkdir()
    for directory in (instance, elsewhere):  # `reelhouse encode clip.mp4` reads ./clip.mp4
        media_fixtures.make_clip(directory / "clip.mp4", width=320, height=180, duration=2.0, fps=15)
    twitch.add_channel("somechannel")
    twitch.add_video("somechannel", video_id=VOD_ID, title="README stream", duration="4s")
    origin = HlsOrigin()
    origin.add_vod(VOD_ID, generate_hls(tmp_path / "hls", duration=4, size="160x90", fps=10))
    port = _free_port()
    with serve(origin) as origin_server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TWITCH_", "YT_", "DATA_DIR", "DATABASE_"))},
            "REELHOUSE_HOME": str(instance),  # relative DATA_DIR (`data`) resolves here from any cwd
            "HTTP_ADDR": f"127.0.0.1:{port}",
            "MASTER_ENCRYPTION_KEY": base64.b64encode(b"r" * 32).decode(),
            "TWITCH_CHANNEL": "somechannel",
            "TWITCH_CLIENT_ID": twitch.client_id,
            "TWITCH_CLIENT_SECRET": twitch.client_secret,
            "TWITCH_API_BASE": f"{twitch_server.base_url}/helix",
            "TWITCH_AUTH_BASE": f"{twitch_server.base_url}/oauth2",
            "TWITCH_VIDEO_URL_TEMPLATE": f"{origin_server.base_url}/videos/{{id}}/index.m3u8",
            "LOG_LEVEL": "warning",
            "COLUMNS": "160",
        }
        server = subprocess.Popen([REELHOUSE, "serve"], cwd=instance, env=env, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, server)
            assert httpx.get(f"{base}/healthz").text == "ok"  # the README's first check
            for cwd in (instance, elsewhere):
                run_all(cwd, env, base, first=cwd == instance)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    assert (instance / "data" / "reelhouse.db").is_file() and not (elsewhere / "data").exists()


def _wait_healthy(base: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"reelhouse serve exited: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    raise AssertionError("reelhouse serve did not become healthy within 60 s")


def run_all(cwd: Path, env: dict[str, str], base: str, *, first: bool) -> None:
    created = run("admin create-user alice --role admin", cwd, env, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    if first:
        assert created.returncode == 0 and "created user alice" in created.stdout, created.stderr
    else:  # the same database from another directory
        assert created.returncode == 1 and "already exists" in created.stderr, created.stderr
    login = httpx.post(f"{base}/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    jobs = httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert jobs.status_code == 200 and isinstance(jobs.json(), list)

    status = run("status", cwd, env)
    assert status.returncode == 0, status.stderr
    assert set(json.loads(status.stdout)) >= set(httpx.get(f"{base}/status").json()) - {"chat"}
    for words in ("jobs list --status failed", "tasks list --status dead", "admin audit verify", "vod list"):
        result = run(words, cwd, env)
        assert result.returncode == 0, (words, result.stderr)

    added = run(f"vod add {VOD_ID} --wait", cwd, env)
    assert added.returncode == 0, added.stdout + added.stderr
    # On the first pass discovery may have found it already (the server's first tick).
    assert (f"{VOD_ID} added" in added.stdout and first) or f"{VOD_ID} already known" in added.stdout
    progress = httpx.get(f"{base}/vods/{VOD_ID}/progress").json()
    assert progress["state"] == "complete" and progress["percent"] == 100
    exported = run(f"chat export {VOD_ID} --format jsonl", cwd, env)
    assert exported.returncode == 0 and "chat rows exported" in exported.stderr

    encoded = run("encode clip.mp4 --profile hls-default --wait", cwd, env)
    assert encoded.returncode == 0, encoded.stdout + encoded.stderr
    assert "master.m3u8" in encoded.stdout
    with (cwd / "clip.mp4").open("rb") as clip:
        upload = httpx.post(
            f"{base}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, files={"file": clip}, timeout=60
        )
    assert upload.status_code == 201, upload.text

    # `reelhouse worker`: an extra worker registers, then stops cleanly on SIGTERM.
    worker = subprocess.Popen([REELHOUSE, "worker"], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _worker_listed(base, token, worker.pid):
            time.sleep(0.2)
        assert _worker_listed(base, token, worker.pid), "the extra worker never appeared in /v1/workers"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""


def _worker_listed(base: str, token: str, pid: int) -> bool:
    listed = httpx.get(f"{base}/v1/workers", headers={"Authorization": f"Bearer {token}"}).json()
    return any((w.get("pid") == pid or str(pid) in str(w.get("id"))) and w.get("healthy") for w in listed)
