"""Log lines: JSON or text, with `component` and `corr`, and known secrets masked."""

from __future__ import annotations

import json
import logging

from reelhouse.core.telemetry.correlation import correlation_scope
from reelhouse.core.telemetry.logging import setup_logging

SECRET = "s3cr3t-admin-token-value"


def _emit(capsys, fmt: str) -> str:
    setup_logging("info", fmt, secrets=[SECRET])
    try:
        with correlation_scope("corr-42"):
            logging.getLogger("reelhouse.archive.download").info(
                "token is %s", SECRET, extra={"url": f"https://x/?t={SECRET}", "vod": "123"}
            )
        logging.getLogger("reelhouse.worker").debug("hidden at info level")
        return capsys.readouterr().err
    finally:
        logging.getLogger().handlers = []


def test_json_lines_carry_component_corr_and_mask_secrets(capsys):
    lines = [line for line in _emit(capsys, "json").splitlines() if line.strip()]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["component"] == "archive" and record["corr"] == "corr-42"
    assert record["vod"] == "123" and record["level"] == "info"
    assert SECRET not in lines[0] and record["msg"] == "token is ***"
    assert record["url"] == "https://x/?t=***"


def test_text_lines_mask_secrets_too(capsys):
    out = _emit(capsys, "text")
    assert "token is ***" in out and "corr=corr-42" in out and "component=archive" in out
    assert SECRET not in out
