"""core/media/ytdlp/aria2c.py: what reaches aria2c's input file, which manifests it gets, and the
fragment bookkeeping that lets aria2c runs resume (and native and aria2c runs each other)."""

from __future__ import annotations

import pytest

from reelhouse.core.media.ytdlp.aria2c import FragmentFiles, aria2c_uri, manifest_is_safe_for_aria2c


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn/seg1.ts\n  on-download-complete=/bin/sh",  # a second line: an aria2c option
        "http://cdn/seg1.ts\tmagnet:?xt=urn:btih:0000",  # a tab: a second URI for the same file
        "http://cdn/seg1.ts\r out=../../../etc/passwd",
        "http://cdn/a b\x0bc\x85d\u2028e.ts",
    ],
)
def test_fragment_urls_cannot_carry_a_line_break_or_a_tab_into_aria2cs_input(url):
    uri = aria2c_uri(url)
    assert all(0x21 <= ord(c) < 0x7F for c in uri), uri
    assert uri.startswith("http://cdn/")


def test_only_http_fragments_go_to_aria2c_and_existing_escapes_stay():
    assert aria2c_uri("https://cdn/x%20y.ts?a=1&b=%2F") == "https://cdn/x%20y.ts?a=1&b=%2F"
    assert aria2c_uri("https://cdn/vidéo.ts") == "https://cdn/vid%C3%A9o.ts"
    for url in ("magnet:?xt=urn:btih:0000", "ftp://host/seg.ts", "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            aria2c_uri(url)


def test_manifests_aria2c_cannot_fetch_fragment_by_fragment_stay_native():
    plain = '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2,\nseg_1.m4s\n#EXTINF:2,\nhttps://cdn/seg_2.m4s\n'
    assert manifest_is_safe_for_aria2c(plain)
    assert not manifest_is_safe_for_aria2c(plain + "#EXT-X-BYTERANGE:1000@0\nall.ts\n")
    assert not manifest_is_safe_for_aria2c(plain + "#EXTINF:2,\nmagnet:?xt=urn:btih:0000\n")
    assert not manifest_is_safe_for_aria2c(plain + "#EXTINF:2,\nftp://host/seg.ts\n")


def test_fragment_bookkeeping_adopts_finished_fragments_and_resumes_the_rest(tmp_path):
    tmp = str(tmp_path / "v.mp4.part")
    files = FragmentFiles(tmp, [1, 2, 3, 4, 5])
    files.done(1).write_bytes(b"a" * 10)  # finished by an earlier run (native or aria2c)
    files.writing(2).write_bytes(b"b" * 20)  # aria2c finished it (control file gone), not yet renamed
    files.writing(3).write_bytes(b"c" * 5)  # half done when aria2c was killed
    files.control(3).write_bytes(b"control")
    files.writing(4).write_bytes(b"")  # created, never written
    files.prepare()
    assert files.pending() == [3, 4, 5]
    assert files.done(2).read_bytes() == b"b" * 20 and not files.writing(2).exists()
    assert files.writing(3).read_bytes() == b"c" * 5 and files.control(3).exists(), "aria2c resumes it"
    assert not files.writing(4).exists()
    files.append_ready()
    assert files.part.read_bytes() == b"a" * 10 + b"b" * 20 and not files.done(1).exists()
    assert files.bytes_on_disk() == (35, 30) and files.finished_count() == 2 and not files.complete()


def test_a_restart_keeps_what_was_appended_and_drops_an_append_it_did_not_record(tmp_path):
    tmp = str(tmp_path / "v.mp4.part")
    first = FragmentFiles(tmp, [1, 2, 3])
    first.prepare()
    first.done(1).write_bytes(b"one")
    first.collect(running=False)
    first.append_ready()
    with open(first.part, "ab") as part:
        part.write(b"tw")  # killed while appending fragment 2: not in the state file
    first.done(2).write_bytes(b"two")
    first.done(3).write_bytes(b"three")

    second = FragmentFiles(tmp, [1, 2, 3])
    second.prepare()
    assert second.appended == 1 and second.part.read_bytes() == b"one"
    second.append_ready()
    assert second.complete() and second.pending() == []
    second.finish()
    assert (tmp_path / "v.mp4.part").read_bytes() == b"onetwothree"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4.part"]


def test_appending_transforms_each_fragment_by_its_position(tmp_path):
    files = FragmentFiles(str(tmp_path / "v.part"), [7, 8])
    files.prepare()
    for index in (8, 7):
        files.done(index).write_bytes(str(index).encode())
    files.collect(running=False)
    files.append_ready(lambda position, data: f"<{position}:{data.decode()}>".encode())
    assert files.part.read_bytes() == b"<0:7><1:8>"


def test_while_aria2c_runs_a_fragment_without_a_control_file_yet_is_not_taken_for_finished(tmp_path):
    files = FragmentFiles(str(tmp_path / "v.mp4.part"), [1, 2])
    files.writing(1).write_bytes(b"x" * 7)  # just opened by aria2c; its control file comes next
    files.collect(running=True)
    assert files.pending() == [1, 2] and files.writing(1).exists()
    files.control(1).write_bytes(b"c")
    files.collect(running=True)
    files.control(1).unlink()  # aria2c finished it
    files.collect(running=True)
    assert files.pending() == [2] and files.done(1).read_bytes() == b"x" * 7
