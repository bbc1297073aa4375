"""Schemathesis over the whole OpenAPI document, as the ADMIN_TOKEN holder and as an anonymous
caller, against `reelhouse serve`: no 5xx, and every response matches its documented schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ADMIN_TOKEN
from .server_process import reelhouse_server

SCHEMATHESIS = Path(sys.executable).with_name("st")
EXAMPLES_PER_OPERATION = 6


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["admin", "anonymous"])
def test_no_server_errors_and_no_schema_violations(db_url, tmp_path, caller):
    env = {
        "DATABASE_URL": db_url,
        "DATA_DIR": str(tmp_path / "data"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        # Generated source URLs must not be resolved (no network here); no worker fetches them.
        "OUTBOUND_ALLOW_PRIVATE": "true",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "warning",
    }
    with reelhouse_server(env, tmp_path / "server.log") as server:
        command = [
            str(SCHEMATHESIS),
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--phases",
            "coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "20261201",
            "--suppress-health-check",
            "all",
            "--no-color",
            "--request-timeout",
            "30",
            # Event streams stay open (their fields are checked by the contract tests); a
            # fuzzer would wait out the request timeout on every example.
            "--exclude-path-regex",
            r"^/v1/events/|/stream$",
        ]
        if caller == "admin":
            command += ["--header", f"Authorization: Bearer {ADMIN_TOKEN}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
        server_log = server.log()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-8000:] + "\n--- server log ---\n" + server_log[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts and int(counts.group(1)) == int(counts.group(2)) > 500, report[-3000:]
