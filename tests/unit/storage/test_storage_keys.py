"""Key, prefix and range rules shared by every backend."""

from __future__ import annotations

import pytest

from reelhouse.core.storage.base import (
    InvalidKey,
    InvalidRange,
    StorageError,
    check_range,
    content_disposition,
    guess_content_type,
    resolve_range,
    ttl_seconds,
    validate_key,
    validate_prefix,
)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "vods/123/source.mp4",
        "hls/720p/seg_00001.ts",
        "name with spaces.mp4",
        "ünïcødé/文件.mkv",
        "a/.hidden",
        "x..y/z",
        "a:b",
    ],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/abs/path", "relative"),
        ("..", "'..'"),
        ("a/../b", "'..'"),
        ("../../etc/passwd", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty"),
        ("dir/", "empty"),
        ("nul\x00", "NUL"),
        ("back\\slash", "backslash"),
        ("tab\there", "control"),
        ("a/.rh-partial-0011", "reserved"),
        ("é" * 600, "1024 bytes"),
        (None, "string"),
        (b"bytes/key", "string"),
    ],
)
def test_invalid_keys_name_the_problem(key: object, reason: str) -> None:
    with pytest.raises(InvalidKey) as excinfo:
        validate_key(key)
    assert reason in str(excinfo.value)
    assert isinstance(excinfo.value, StorageError)


def test_prefixes_may_be_empty_or_end_with_slash() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("vods/") == "vods/"
    assert validate_prefix("vods/12") == "vods/12"
    for bad in ("/", "../", "a//", "/abs/"):
        with pytest.raises(InvalidKey):
            validate_prefix(bad)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("x/master.m3u8", "application/vnd.apple.mpegurl"),
        ("x/SEG1.TS", "video/mp2t"),
        ("x/init.m4s", "video/iso.segment"),
        ("x/en.vtt", "text/vtt"),
        ("x/v.mp4", "video/mp4"),
        ("x/chat.json", "application/json"),
        ("x/no-extension", "application/octet-stream"),
    ],
)
def test_content_type_from_extension(key: str, expected: str) -> None:
    assert guess_content_type(key) == expected


def test_resolve_range_clamps_end_and_rejects_start_past_end() -> None:
    assert resolve_range("k", None, 10) is None
    assert resolve_range("k", (0, 0), 10) == (0, 0)
    assert resolve_range("k", (3, 100), 10) == (3, 9)
    with pytest.raises(InvalidRange, match="10 bytes"):
        resolve_range("k", (10, 12), 10)
    with pytest.raises(InvalidRange):
        resolve_range("k", (0, 0), 0)


@pytest.mark.parametrize("bad", [(-1, 5), (5, 4), ("a", 1), (1,)])
def test_check_range_rejects_malformed(bad: tuple) -> None:
    with pytest.raises(InvalidRange):
        check_range("k", bad)


def test_content_disposition_is_header_safe() -> None:
    assert content_disposition("clip.mp4") == "attachment; filename=\"clip.mp4\"; filename*=UTF-8''clip.mp4"
    header = content_disposition('a"b;c\\d.mp4')
    assert header.startswith('attachment; filename="a_b_c_d.mp4";')
    for bad in ("", "two\r\nlines", "nul\x00"):
        with pytest.raises(StorageError):
            content_disposition(bad)


def test_ttl_must_be_positive() -> None:
    from datetime import timedelta

    assert ttl_seconds(timedelta(minutes=2)) == 120
    assert ttl_seconds(30) == 30
    with pytest.raises(StorageError):
        ttl_seconds(0)
