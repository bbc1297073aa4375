"""ENABLE_PPROF / PPROF_ADDR: off by default; on, `reelhouse serve` and `reelhouse worker` answer
/debug/pprof/ on a loopback address with a real pyinstrument profile of their event loop
taken while it works; a non-loopback address stops start-up unless PPROF_ALLOW_REMOTE."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import ConfigError, Settings
from reelhouse.core.telemetry.profiling import ProfilingSettings, parse_addr, start_profiling
from tests.integration.security.server_process import free_port, reelhouse_server


def test_off_by_default(monkeypatch):
    for name in ("ENABLE_PPROF", "PPROF_ADDR", "PPROF_ALLOW_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    settings = ProfilingSettings()
    assert not settings.enable_pprof and settings.pprof_addr == "localhost:6060"
    assert start_profiling(settings, None) is None


@pytest.mark.parametrize("addr", ["0.0.0.0:6060", ":6060", "10.1.2.3:6060", "[::]:6060", "192.168.0.10:6060"])
def test_non_loopback_addresses_are_refused(addr):
    with pytest.raises(ConfigError, match=r"PPROF_ADDR: .*not a loopback address"):
        parse_addr(addr, allow_remote=False)
    assert parse_addr(addr, allow_remote=True)[1] == 6060  # explicitly allowed


@pytest.mark.parametrize("addr", ["localhost", "127.0.0.1:0x10", "127.0.0.1:70000", "no-port:"])
def test_malformed_addresses_are_refused(addr):
    with pytest.raises(ConfigError, match="PPROF_ADDR: expected host:port"):
        parse_addr(addr, allow_remote=False)


def test_loopback_addresses_are_accepted():
    assert parse_addr("localhost:6060", allow_remote=False) == ("localhost", 6060)
    assert parse_addr("127.0.0.1:7000", allow_remote=False) == ("127.0.0.1", 7000)
    assert parse_addr("[::1]:7000", allow_remote=False) == ("::1", 7000)


def test_the_app_refuses_a_public_pprof_addr(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ENABLE_PPROF", "1")
    monkeypatch.setenv("PPROF_ADDR", "0.0.0.0:6060")
    with pytest.raises(ConfigError, match="PPROF_ALLOW_REMOTE"):  # `reelhouse serve` prints it, exits 2
        create_app(Settings(), background=False)
    monkeypatch.setenv("PPROF_ALLOW_REMOTE", "true")
    create_app(Settings(), background=False)  # explicitly allowed: builds (listens only when served)


def _busy(base_url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            client.get("/status")
            client.get("/readyz")


def test_serve_returns_a_profile_of_its_event_loop(tmp_path):
    pprof = f"127.0.0.1:{free_port()}"
    env = {"DATA_DIR": str(tmp_path), "DATABASE_URL": "", "ENABLE_PPROF": "1", "PPROF_ADDR": pprof}
    with reelhouse_server(env, tmp_path / "serve.log") as server:
        base = f"http://{pprof}/debug/pprof"
        assert "/debug/pprof/profile" in httpx.get(f"{base}/", timeout=10).text
        stop = threading.Event()
        load = threading.Thread(target=_busy, args=(server.base_url, stop))
        load.start()
        try:
            text = httpx.get(f"{base}/profile", params={"seconds": "2"}, timeout=60)
            speedscope = httpx.get(f"{base}/profile", params={"seconds": "1", "format": "speedscope"}, timeout=60)
        finally:
            stop.set()
            load.join(30)
        assert text.status_code == 200, text.text
        # pyinstrument's report of the loop thread while /status and /readyz were being served:
        # the handlers and the middleware appear in it.
        assert "Recorded:" in text.text and "Samples:" in text.text
        assert "readyz" in text.text or "status" in text.text or "RequestGuard" in text.text, text.text[:3000]
        profile = speedscope.json()
        assert "speedscope" in profile["$schema"] and profile["shared"]["frames"]
        stacks = httpx.get(f"{base}/stacks", timeout=30).text
        assert "thread MainThread" in stacks and "task " in stacks
        heap = httpx.get(f"{base}/heap", params={"limit": "5"}, timeout=30).text
        assert "objects tracked" in heap and len(heap.splitlines()) == 6
        assert httpx.get(f"{base}/profile", params={"seconds": "9999"}, timeout=10).status_code == 400
        assert httpx.get(f"{base}/profile", params={"format": "pdf"}, timeout=10).status_code == 400
        assert httpx.get(f"{base}/nothing", timeout=10).status_code == 404


def test_worker_serves_metrics_and_profiles(tmp_path):
    pprof, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "DATA_DIR": str(tmp_path), "ENABLE_PPROF": "true", "PPROF_ADDR": pprof}
    env.pop("DATABASE_URL", None)
    env["METRICS_ADDR"] = metrics
    migrate = subprocess.run(
        [sys.executable, "-m", "reelhouse.cli", "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "reelhouse.cli", "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else ""
            try:
                body = httpx.get(f"http://{metrics}/metrics", timeout=2).text
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "worker metrics listener did not start"
                time.sleep(0.2)
        assert "database_connection_pool_size " in body and "reelhouse_task_transitions_total" in body
        profile = httpx.get(f"http://{pprof}/debug/pprof/profile", params={"seconds": "1"}, timeout=60)
        assert profile.status_code == 200 and "Samples:" in profile.text
    finally:
        worker.terminate()
        worker.wait(30)
