"""CPU a `reelhouse` command spends before and while it does its (tiny) work.

Every command, `reelhouse worker` and `reelhouse serve` pay their start-up: with many CLI calls
(operators' scripts, the test suite) it is most of the time they take. Measured as user+system
CPU of the child process (median of --repeat runs), and as a ratio to a baseline run in the
same way: an interpreter that imports only what any command needs (typer, SQLAlchemy,
pydantic-settings), so a slower or busier machine moves both.

    .venv/bin/python bench/startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REELHOUSE = str(Path(sys.executable).with_name("reelhouse"))
BASELINE = [sys.executable, "-c", "import typer, sqlalchemy.ext.asyncio, pydantic_settings"]
COMMANDS = {
    "reelhouse --help": [REELHOUSE, "--help"],
    "reelhouse jobs list": [REELHOUSE, "jobs", "list"],
    "reelhouse status": [REELHOUSE, "status"],
    "reelhouse vod list": [REELHOUSE, "vod", "list"],
}


def child_cpu(command: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "REELHOUSE_HOME": home, "LOG_LEVEL": "warning"}
        env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "DATA_DIR")}
        subprocess.run([REELHOUSE, "migrate"], env=env, check=True, capture_output=True)
        baseline = statistics.median(child_cpu(BASELINE, env) for _ in range(args.repeat))
        print(f"{'baseline (typer + SQLAlchemy + pydantic-settings)':<52} {baseline:6.2f} s CPU")
        for name, command in COMMANDS.items():
            cpu = statistics.median(child_cpu(command, env) for _ in range(args.repeat))
            print(f"{name:<52} {cpu:6.2f} s CPU  {cpu / baseline:5.1f}x baseline")


if __name__ == "__main__":
    main()
