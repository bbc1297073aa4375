"""core/media/ytdlp/output.py: yt-dlp's progress lines and secret scrubbing."""

from __future__ import annotations

from reelhouse.core.media.ytdlp import parse_progress_line, redact_argv, scrub
from reelhouse.core.media.ytdlp.output import PROGRESS_PREFIX


def test_progress_lines_from_the_template_and_from_yt_dlp_defaults():
    line = f"{PROGRESS_PREFIX} 3026680 NA 6885752.0 3467491.3 1.5"
    progress = parse_progress_line(line)
    assert progress is not None
    assert (progress.downloaded_bytes, progress.total_bytes, progress.eta) == (3026680, 6885752, 1.5)
    assert progress.exact_total is False and 0.43 < (progress.fraction or 0) < 0.45
    done = parse_progress_line(f"{PROGRESS_PREFIX} NA 256556 NA NA NA")  # "already downloaded"
    assert done is not None and done.downloaded_bytes == done.total_bytes == 256556 and done.fraction == 1.0
    default = parse_progress_line("[download]  50.0% of ~  10.00MiB at    2.00MiB/s ETA 01:05 (frag 3/10)")
    assert default is not None and default.total_bytes == 10 * 1024 * 1024
    assert default.downloaded_bytes == 5 * 1024 * 1024 and default.speed == 2 * 1024 * 1024 and default.eta == 65
    assert parse_progress_line("[generic] index: Downloading webpage") is None
    assert parse_progress_line(f"{PROGRESS_PREFIX} NA NA NA NA NA") is None
    assert parse_progress_line(f"{PROGRESS_PREFIX} 1 2") is None


def test_secrets_are_scrubbed_from_output_and_argv():
    line = "GET https://usher.ttvnw.net/vod/1.m3u8?sig=abcdef123&token=%7B%22auth%22%7D&p=1 Cookie: auth-token=s3cret"
    cleaned = scrub(line)
    assert "abcdef123" not in cleaned and "s3cret" not in cleaned and "%7B%22auth" not in cleaned
    assert "p=1" in cleaned
    argv = redact_argv(
        [
            "--password",
            "hunter2",
            "--add-header",
            "Authorization: Bearer t0k",
            "--username=bob",
            "-o",
            "/data/x.mp4",
            "https://host/v.m3u8?token=zzz",
        ]
    )
    assert "hunter2" not in argv and "Authorization: Bearer t0k" not in argv and "--username=bob" not in argv
    assert "/data/x.mp4" in argv and not any("zzz" in a for a in argv)
