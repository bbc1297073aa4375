"""A 2 GiB object streams through each backend without the process growing by 200 MB.

The round trip runs in a child process of its own (big_round_trip.py): its peak RSS is then the
backend's alone, not that of whatever else this test process has loaded or still runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import SeaweedS3

SIZE = 2 * 1024**3
MAX_RSS_GROWTH = 200 * 1024 * 1024
CHILD = Path(__file__).with_name("big_round_trip.py")


def run_child(spec: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(CHILD), json.dumps({**spec, "size": str(SIZE)})],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["fs", "s3"])
def test_two_gib_round_trip_in_bounded_memory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "fs":
        result = run_child({"backend": "fs", "root": str(tmp_path / "objects")})
    else:
        seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
        bucket = seaweedfs.new_bucket()
        try:
            result = run_child(
                {
                    "backend": "s3",
                    "bucket": bucket,
                    "endpoint": seaweedfs.endpoint,
                    "access_key": seaweedfs.access_key,
                    "secret_key": seaweedfs.secret_key,
                }
            )
        finally:
            seaweedfs.drop_bucket(bucket)

    assert result["put_size"] == SIZE
    assert result["stat_size"] == SIZE
    assert result["received_bytes"] == SIZE
    assert result["received"] == result["sent"]
    assert result["tail_matches"], "offsets past 2**31 address the right bytes"
    growth = int(result["rss_growth"])  # type: ignore[call-overload]
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"
