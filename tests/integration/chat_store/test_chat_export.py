"""`reelhouse chat export VOD --format json|jsonl|txt`, run as a real process: every format
holds every row in order, and memory does not grow with the length of the chat."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.chat_store.conftest import seed_chat

# Runs chat commands one after another in a fresh interpreter (imports are paid once) and
# reports each one's exit code and the process's peak RSS after it, as JSON on stderr.
_RUNNER = (
    "import json, resource, sys\n"
    "from reelhouse.archive.chat.cli import chat_app\n"
    "for argv in json.loads(sys.argv[1]):\n"
    "    code = chat_app(argv, standalone_mode=False)\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    print('RESULT ' + json.dumps([code if isinstance(code, int) else 0, peak]), file=sys.stderr)\n"
)


async def run_chat_cli(db_url: str, data_dir: Path, *commands: list[str]) -> tuple[list[tuple[int, int]], str]:
    """[(exit code, peak RSS in KiB after the command)] per command, and stderr."""
    env = {**os.environ, "DATABASE_URL": db_url, "DATA_DIR": str(data_dir), "LOG_LEVEL": "warning"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _RUNNER, json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcomes = [tuple(json.loads(line[7:])) for line in result.stderr.splitlines() if line.startswith("RESULT ")]
    return outcomes, result.stderr


async def test_export_writes_every_format_in_order(engine, db_url, tmp_path):
    ids = await seed_chat(engine, "v1", [0.5, 5.0, 65.25, 3700.0], prefix="e")
    formats = ("json", "jsonl", "txt")
    outcomes, stderr = await run_chat_cli(
        db_url,
        tmp_path,
        *[["export", "v1", "--format", fmt, "-o", str(tmp_path / f"chat.{fmt}")] for fmt in formats],
        ["export", "nope"],
    )
    assert [code for code, _ in outcomes] == [0, 0, 0, 1]
    assert stderr.count("4 chat rows exported") == 3 and "vod nope not found" in stderr
    outputs = {fmt: (tmp_path / f"chat.{fmt}").read_text() for fmt in formats}
    document = json.loads(outputs["json"])
    assert document["vod_id"] == "v1" and [m["message_id"] for m in document["messages"]] == ids
    assert [json.loads(line)["message_id"] for line in outputs["jsonl"].splitlines()] == ids
    assert outputs["txt"].splitlines() == [
        "[0:00:00] User0: message number 0",
        "[0:00:05] User1: message number 1",
        "[0:01:05] User2: message number 2",
        "[1:01:40] User3: message number 3",
    ]


async def test_export_memory_stays_flat_for_a_long_chat(engine, db_url, tmp_path):
    await seed_chat(engine, "short", [0.0], prefix="s")
    await seed_chat(engine, "long", [i * 0.1 for i in range(40_000)], prefix="l")
    (short, long), _ = await run_chat_cli(
        db_url,
        tmp_path,
        ["export", "short", "-f", "json", "-o", str(tmp_path / "s.json")],
        ["export", "long", "-f", "json", "-o", str(tmp_path / "l.json")],
    )
    assert short[0] == long[0] == 0
    size_kb = (tmp_path / "l.json").stat().st_size // 1024
    assert len(json.loads((tmp_path / "l.json").read_text())["messages"]) == 40_000
    # 40,000 rows are ~15 MB of JSON; holding them (as rows, dicts or text) would show here.
    grown = long[1] - short[1]
    assert grown < min(12_000, size_kb // 2), (short[1], long[1], size_kb)
