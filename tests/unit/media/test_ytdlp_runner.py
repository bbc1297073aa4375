"""core/media/ytdlp/runner.py without a download: the arguments yt-dlp gets. (With real yt-dlp,
aria2c and an HLS origin: tests/integration/media/test_ytdlp_runner.py.)"""

from __future__ import annotations

from reelhouse.core.media.ytdlp import YtdlpRequest, build_args


def test_operator_arguments_come_first_so_ours_win(tmp_path):
    args = build_args(
        YtdlpRequest(
            url="https://host/v.m3u8",
            output=tmp_path / "v.mp4",
            extra_args=("--concurrent-fragments", "3"),
            max_bytes=5000,
            extractors="generic",
        )
    )
    assert args[:2] == ["--concurrent-fragments", "3"]
    assert args[args.index("--concurrent-fragments", 2) + 1] == "10"
    assert args[args.index("--max-filesize") + 1] == "5000" and "--ignore-config" in args
    assert args[-3:] == ["-o", str(tmp_path / "v.mp4"), "https://host/v.m3u8"]
