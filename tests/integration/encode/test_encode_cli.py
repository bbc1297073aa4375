"""`reelhouse encode SOURCE ...` as the root CLI mounts it (a Typer group named `encode`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from reelhouse.config import reset_settings_cache
from reelhouse.encode.cli import encode_app


def root_app() -> typer.Typer:
    # What reelhouse.cli does with the `reelhouse.cli` entry point `encode`.
    root = typer.Typer()
    root.add_typer(encode_app, name="encode")

    @root.command()
    def version() -> None:  # a second command, so `encode` is a real sub-group as in production
        typer.echo("0")

    return root


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI installs its log handler on the stderr CliRunner swaps in and closes afterwards;
    later tests must not log into that closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


def test_cli_encodes_a_local_file_in_process_and_prints_the_renditions(settings, clip_480p, restore_logging, tmp_path):
    reset_settings_cache()
    runner = CliRunner()
    # No worker is running: the command encodes in this process, with its progress bar.
    result = runner.invoke(
        root_app(), ["encode", str(clip_480p), "--preset", "ultrafast", "--output-prefix", "cli/one", "--poll", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "no worker is running: encoding in this process" in result.output
    assert "job 1 queued: encode.probe (profile hls-default, output encodes/cli/one/)" in result.output
    # Outputs live in the publishing run's scope (fencing: run-<fence>/ under the prefix).
    assert "encodes/cli/one/run-1/master.m3u8" in result.output
    assert "/media/encodes/cli/one/run-1/master.m3u8" in result.output
    for line in ("480p", "854x480", "360p", "640x360", "avc1."):
        assert line in result.output, result.output

    # --no-wait only queues, and says nobody will run it; a bad source or profile exits 2.
    queued = runner.invoke(
        root_app(), ["encode", "encodes/cli/one/run-1/480p/seg_00000.ts", "--profile", "mp4-720p", "--no-wait"]
    )
    assert queued.exit_code == 0 and "job 2 queued: encode.probe" in queued.output, queued.output
    assert "no worker is running" in queued.output and "reelhouse worker" in queued.output
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    broken = runner.invoke(root_app(), ["encode", str(corrupt), "--poll", "0.1"])
    assert broken.exit_code == 1 and "failed" in broken.output, broken.output
    missing = runner.invoke(root_app(), ["encode", "no/such/thing.mp4"])
    assert missing.exit_code == 2 and "not an http(s) URL, a local file, or a key in storage" in missing.output
    unknown = runner.invoke(root_app(), ["encode", str(clip_480p), "--profile", "nope"])
    assert unknown.exit_code == 2 and "unknown profile 'nope'" in unknown.output
    listed = runner.invoke(root_app(), ["encode", "profiles"])
    assert listed.exit_code == 0 and "hls-default" in listed.output and "1080p 1920x1080" in listed.output
    reset_settings_cache()
