"""Pure helpers of the encode domain: yt-dlp errors for source URLs, link tokens, sizes, prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.media.ytdlp import classify_failure
from reelhouse.encode.fetch import check_source_url, classify
from reelhouse.encode.media import check_token, make_token
from reelhouse.encode.outputs import upload_order
from reelhouse.encode.service import safe_filename
from reelhouse.encode.settings import EncodeSettings, parse_size
from reelhouse.encode.submit import SubmitError, clean_output_prefix


@pytest.mark.parametrize(
    ("stderr", "kind", "text"),
    [
        (["ERROR: [generic] Unable to download webpage: HTTP Error 404: Not Found"], PermanentError, "HTTP Error 404"),
        (["ERROR: [generic] Unable to download webpage: HTTP Error 403: Forbidden"], PermanentError, "HTTP Error 403"),
        (["ERROR: Unsupported URL: https://example.com/"], PermanentError, "Unsupported URL"),
        (["ERROR: [youtube] x: Private video. Sign in"], PermanentError, "Private video"),
        (
            ["ERROR: [generic] Unable to download webpage: <urlopen error [Errno 111] Connection refused>"],
            TransientError,
            "Connection refused",
        ),
        (
            ["[info] File is larger than max-filesize (2000 bytes > 1000 bytes). Aborting."],
            PermanentError,
            "MAX_UPLOAD_BYTES (1000 bytes)",
        ),
        ([], TransientError, "status 1 and no error message"),
    ],
)
def test_ytdlp_failures_are_classified_for_a_users_source_url(stderr, kind, text):
    error = classify(classify_failure(1, stderr), 1000)
    assert type(error) is kind and text in error.reason


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/a.mp4", "https://", "javascript:alert(1)", "/local"])
def test_only_http_urls_are_sources(url):
    with pytest.raises(ValueError, match="http"):
        check_source_url(url)
    assert check_source_url(" https://example.com/v.mp4 ") == "https://example.com/v.mp4"


def test_link_tokens_cover_their_prefix_only_and_expire():
    secret = b"s" * 32
    token = make_token(secret, "encodes/job-3", 2_000)
    assert check_token(secret, token, "encodes/job-3/720p/seg_00001.ts", now=1_000) is None
    assert check_token(secret, token, "encodes/job-4/720p/seg_00001.ts", now=1_000) == "link signature does not match"
    assert check_token(secret, token, "encodes/job-3", now=1_000) == "link does not cover this object"
    assert check_token(secret, token, "encodes/job-3/master.m3u8", now=3_000) == "link expired"
    assert check_token(b"t" * 32, token, "encodes/job-3/master.m3u8", now=1_000) == "link signature does not match"
    _depth, expires, mac = token.split(".")
    forged = f"1.{expires}.{mac}"  # widening the scope to `encodes` changes what the MAC covers
    assert check_token(secret, forged, "encodes/job-3/master.m3u8", now=1_000) == "link signature does not match"
    assert check_token(secret, "garbage", "encodes/job-3/master.m3u8") == "malformed link token"


def test_sizes_and_settings():
    assert parse_size("10G") == 10 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1024") == 1024
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("ten gigs")
    conf = EncodeSettings(MAX_UPLOAD_BYTES="2M", ENCODE_OUTPUT_PREFIX="/media/out/")
    assert conf.max_upload_bytes == 2 << 20 and conf.output_prefix == "media/out"
    assert conf.scratch_dir(Path("/data")) == Path("/data/work/encode")
    with pytest.raises(ValidationError):
        EncodeSettings(ENCODE_OUTPUT_PREFIX="a/../b")


def test_output_prefixes_are_relative_and_checked():
    assert clean_output_prefix(None) is None and clean_output_prefix(" / ") is None
    assert clean_output_prefix("/shows/ep1/") == "shows/ep1"
    for bad, reason in (("a//b", "empty"), ("a/./b", "'.'"), ("job-12", "reserved"), ("a\\b", "backslash")):
        with pytest.raises(SubmitError, match=reason) as caught:
            clean_output_prefix(bad)
        assert caught.value.status == 400


def test_playlists_are_uploaded_after_what_they_reference():
    files = [
        Path("out/master.m3u8"),
        Path("out/720p/index.m3u8"),
        Path("out/720p/seg_00001.ts"),
        Path("out/360p/seg_00000.ts"),
        Path("out/360p/index.m3u8"),
    ]
    ordered = [p.as_posix() for p in upload_order(files)]
    assert ordered[-1] == "out/master.m3u8"
    assert ordered.index("out/720p/index.m3u8") > ordered.index("out/720p/seg_00001.ts")
    assert ordered.index("out/360p/index.m3u8") > ordered.index("out/360p/seg_00000.ts")


def test_upload_names_are_safe_keys():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\My Clip (1).mp4") == "My_Clip__1_.mp4"
    assert safe_filename("") == "source" and safe_filename("...") == "source"
